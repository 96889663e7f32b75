"""The typed set of services a workspace wires together: what the session (and the orchestration in
app/) works with. Built only by the composition root (app/workspace.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from complai.access.agreements import Agreements
from complai.access.authz import Authz
from complai.access.identity import Identity
from complai.access.policy import Policy
from complai.clock import Clock
from complai.compliance.incidents import Incidents
from complai.compliance.requests import Requests
from complai.config import Settings
from complai.crypto.keyring import Keyring
from complai.crypto.pseudonym import Pseudonymizer
from complai.deid.operators import Keys as DeidKeys
from complai.dp.budget import Budgets
from complai.dp.models import Models
from complai.ledger.log import Ledger
from complai.spark import SparkRuntime
from complai.store import Store
from complai.store.engine import redact_url
from complai.store.tables import datasets, ledger_checkpoints
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog
from complai.vault.keys import KeyService
from complai.vault.service import Vault


@dataclass(frozen=True)
class Services:
    """One workspace's services, each typed; nothing here is optional."""

    settings: Settings
    store: Store
    clock: Clock
    taxonomy: Taxonomy
    ledger: Ledger
    catalog: Catalog
    keyring: Keyring
    pseudonyms: Pseudonymizer
    vault: Vault
    keys: KeyService
    deid_keys: DeidKeys
    budgets: Budgets
    models: Models
    requests: Requests
    incidents: Incidents
    identity: Identity
    authz: Authz
    policy: Policy
    agreements: Agreements
    spark: SparkRuntime  # started at first use (external datasets), never by opening the workspace

    @property
    def path(self) -> Path:
        return self.settings.path


@dataclass(frozen=True)
class Status:
    path: str
    workspace_id: str
    database: str
    schema_revision: str
    ledger_size: int
    ledger_root: str
    checkpoints: int
    datasets: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status(svc: Services) -> Status:
    """The workspace's identity, database, schema revision, ledger head and counts."""
    head = svc.ledger.head()
    with svc.store.read() as conn:
        n_checkpoints = conn.execute(select(func.count()).select_from(ledger_checkpoints)).scalar_one()
        n_datasets = conn.execute(
            select(func.count()).select_from(datasets).where(datasets.c.dropped_at.is_(None))
        ).scalar_one()
        rev = svc.store.current_revision(conn) or "none"
    return Status(
        path=str(svc.path),
        workspace_id=svc.settings.workspace_id,
        database=redact_url(svc.store.url),
        schema_revision=rev,
        ledger_size=head.size,
        ledger_root=head.root.hex(),
        checkpoints=int(n_checkpoints),
        datasets=int(n_datasets),
    )
