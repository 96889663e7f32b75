"""Store.shared_reads: an operation's reads in one snapshot, on every backend."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError

from complai.app.workspace import Workspace
from complai.store.tables import meta


def _value(ws: Workspace, key: str) -> str | None:
    with ws.store.read() as conn:
        return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()


def _set(ws: Workspace, key: str, value: str) -> None:
    with ws.store.write() as conn:
        if conn.execute(select(meta.c.key).where(meta.c.key == key)).first() is None:
            conn.execute(insert(meta).values(key=key, value=value))
        else:
            conn.execute(update(meta).where(meta.c.key == key).values(value=value))


def _begins(ws: Workspace) -> list[int]:
    count = [0]

    def begun(conn: Any) -> None:
        count[0] += 1

    event.listen(ws.store.engine, "begin", begun)
    return count


def test_reads_in_a_block_share_one_transaction_and_snapshot(ws: Workspace) -> None:
    _set(ws, "shared", "before")
    begins = _begins(ws)
    with ws.store.shared_reads():
        assert _value(ws, "shared") == "before"
        _set(ws, "shared", "after")  # committed by another transaction meanwhile (here: this thread's write)
        assert _value(ws, "shared") == "before"  # the block's snapshot
        assert _value(ws, "missing") is None
    assert begins[0] == 2  # the shared read's and the write's
    assert _value(ws, "shared") == "after"  # after the block: a read of its own


def test_renewed_shared_reads_see_what_was_committed_since(ws: Workspace) -> None:
    _set(ws, "renew", "1")
    with ws.store.shared_reads():
        assert _value(ws, "renew") == "1"
        _set(ws, "renew", "2")
        ws.store.renew_shared_reads()
        assert _value(ws, "renew") == "2"


def test_blocks_are_per_thread_and_nested_blocks_share_the_outer_one(ws: Workspace) -> None:
    _set(ws, "threads", "a")
    seen: list[str | None] = []
    with ws.store.shared_reads():
        assert _value(ws, "threads") == "a"
        _set(ws, "threads", "b")
        with ws.store.shared_reads():
            assert _value(ws, "threads") == "a"
        other = threading.Thread(target=lambda: seen.append(_value(ws, "threads")))
        other.start()
        other.join()
        assert _value(ws, "threads") == "a"
    assert seen == ["b"]  # another thread is not in this thread's block


def test_a_failed_read_ends_the_shared_transaction(ws: Workspace) -> None:
    _set(ws, "after_error", "x")
    with ws.store.shared_reads():
        with pytest.raises((DBAPIError, OperationalError)), ws.store.read() as conn:
            conn.execute(text("SELECT no_such_column FROM meta"))
        # on PostgreSQL the failed statement aborted the transaction: the next read opens a new one
        assert _value(ws, "after_error") == "x"


def test_a_mark_is_taken_before_the_shared_snapshot(ws: Workspace) -> None:
    calls: list[int] = []

    def mark() -> int:
        calls.append(len(calls))
        return len(calls)

    ws.store.snapshot_marks.append(mark)
    try:
        assert ws.store.before_snapshot(mark) == 1  # outside a block: now
        with ws.store.shared_reads():
            assert ws.store.before_snapshot(mark) == 2  # no read yet: now
            _value(ws, "anything")  # opens the block's transaction, marking first (3)
            assert ws.store.before_snapshot(mark) == 3  # the mark of that transaction, not a new one
            assert ws.store.before_snapshot(mark) == 3
            ws.store.renew_shared_reads()
            assert ws.store.before_snapshot(mark) == 4
    finally:
        ws.store.snapshot_marks.remove(mark)
