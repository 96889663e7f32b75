"""A stored time (SQLite gives it back naive) as an aware UTC datetime, for a value that is present:
clock.as_utc also passes None through, so its result is optional even where the column is not."""

from __future__ import annotations

from datetime import datetime

from complai.clock import as_utc


def utc(when: datetime) -> datetime:
    aware = as_utc(when)
    assert aware is not None
    return aware
