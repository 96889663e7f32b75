"""Notices the vault raises inside its write transactions, for services above it to act on in the same
transaction (the model registry flags models trained on erased or expired records). The vault writes
only its own tables; handlers are registered by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection


@dataclass(frozen=True)
class Notice:
    """Something the vault did, delivered with the connection of the transaction that did it."""

    conn: Connection
    at: datetime


@dataclass(frozen=True)
class SubjectsErased(Notice):
    """Subjects erased (a request, or a tombstone re-applied after a restore) at ledger entry `seq`."""

    subject_ids: tuple[int, ...]
    seq: int


@dataclass(frozen=True)
class RecordsExpired(Notice):
    """Records of `dataset` passed their retention period (or the dataset is dropped: `why`) and are
    being deleted: these subjects had some."""

    dataset: str
    subject_ids: tuple[int, ...]
    why: str = "passed its retention period"


N = TypeVar("N", bound=Notice)


class Notices:
    """In-process delivery of notices to the handlers subscribed to their class, in subscription order.
    A handler's exception propagates to the vault, whose transaction then rolls back."""

    def __init__(self) -> None:
        self._handlers: dict[type[Notice], list[Callable[[Any], None]]] = {}

    def subscribe(self, kind: type[N], handler: Callable[[N], None]) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    def publish(self, notice: Notice) -> None:
        for handler in self._handlers.get(type(notice), ()):
            handler(notice)
