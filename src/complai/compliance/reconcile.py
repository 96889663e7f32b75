"""Reconciliation of the store's state with the ledger (control RECON-1).

The ledger is the authority; tables are state derived from it that someone with access to the
database could edit at rest. Each reconciler derives what one part of the store must hold from the
ledger's events, compares it with what the store does hold, and returns one line per divergence
(empty when they agree). The control fails when any reconciler names a divergence.

Contract: a reconciler is `def reconcile_x(ctx: AuditContext) -> list[str]`, listed in RECONCILERS.
A divergence line names the item (dataset, subject pseudonym, key version, ...) and what is wrong;
it never carries personal data or exact values from a differential-privacy path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from complai.compliance.engine import AuditContext

Reconciler = Callable[["AuditContext"], list[str]]


RECONCILERS: list[Reconciler] = []


def reconcile(ctx: AuditContext) -> tuple[list[tuple[str, str]], list[str]]:
    """Run every reconciler; returns ([(reconciler area, divergence)], [areas checked])."""
    found: list[tuple[str, str]] = []
    areas = []
    for fn in RECONCILERS:
        area = fn.__name__.removeprefix("reconcile_")
        areas.append(area)
        found += [(area, d) for d in fn(ctx)]
    return found, areas
