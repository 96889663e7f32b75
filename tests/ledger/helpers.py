"""A test-only event type and helpers to fill a log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from complai.events import Event
from complai.ledger.log import Ledger


class Probe(Event):
    kind: ClassVar[str] = "test.probe"
    n: int


def probe(n: int) -> Probe:
    return Probe(time=datetime(2026, 1, 1, tzinfo=UTC), actor="tester", purpose="audit", n=n)


def fill(ledger: Ledger, count: int, batch: int = 1000) -> None:
    start = ledger.head().size
    done = 0
    while done < count:
        k = min(batch, count - done)
        with ledger.store.write() as conn:
            ledger.append_many(conn, [probe(start + done + i) for i in range(k)])
        done += k
