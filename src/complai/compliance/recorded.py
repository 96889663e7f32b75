"""What an operation that changes governance state returns: its result and the sequence number of the
ledger entry that recorded it (callers cite the entry without asking the ledger for its head)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Recorded(Generic[T]):
    value: T
    seq: int
