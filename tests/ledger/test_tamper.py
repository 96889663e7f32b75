"""Tampering with any row of the log, its node cache, head or checkpoints is caught by verification."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, delete, insert, select, update

from complai.app.workspace import Workspace
from complai.ledger import merkle
from complai.ledger.log import STRATUM
from complai.ledger.verify import verify_ledger
from complai.store.tables import ledger_checkpoints, ledger_entries, ledger_head, ledger_nodes
from tests.ledger.helpers import fill, probe


@pytest.fixture
def logged(ws: Workspace) -> Workspace:
    fill(ws.ledger, 40)
    ws.ledger.checkpoint()  # size 41, recorded as entry 41
    fill(ws.ledger, 30)
    ws.ledger.checkpoint()  # size 72, recorded as entry 72
    report = verify_ledger(ws.ledger)
    assert report.ok, report.problem
    return ws


def data_of(conn: Connection, seq: int) -> bytes:
    return bytes(conn.execute(select(ledger_entries.c.data).where(ledger_entries.c.seq == seq)).scalar_one())


def change_data(conn: Connection) -> None:
    conn.execute(update(ledger_entries).where(ledger_entries.c.seq == 7).values(data=probe(999).canonical()))


def change_data_and_hash(conn: Connection) -> None:
    d = probe(999).canonical()
    conn.execute(update(ledger_entries).where(ledger_entries.c.seq == 7).values(data=d, leaf_hash=merkle.leaf_hash(d)))


def change_kind(conn: Connection) -> None:
    conn.execute(update(ledger_entries).where(ledger_entries.c.seq == 3).values(kind="workspace.created"))


def delete_row(conn: Connection) -> None:
    conn.execute(delete(ledger_entries).where(ledger_entries.c.seq == 12))


def delete_last_row(conn: Connection) -> None:
    conn.execute(delete(ledger_entries).where(ledger_entries.c.seq == 72))


def reorder_rows(conn: Connection) -> None:
    a, b = data_of(conn, 5), data_of(conn, 6)
    for seq, d in ((5, b), (6, a)):
        conn.execute(
            update(ledger_entries).where(ledger_entries.c.seq == seq).values(data=d, leaf_hash=merkle.leaf_hash(d))
        )


def insert_row(conn: Connection) -> None:
    d = probe(12345).canonical()
    conn.execute(insert(ledger_entries).values(seq=73, kind="test.probe", leaf_hash=merkle.leaf_hash(d), data=d))


def alter_node(conn: Connection) -> None:
    conn.execute(update(ledger_nodes).where(ledger_nodes.c.level == STRATUM).values(hash=b"\x00" * 32))


def delete_node(conn: Connection) -> None:
    conn.execute(delete(ledger_nodes).where(ledger_nodes.c.level == STRATUM, ledger_nodes.c.idx == 1))


def insert_node(conn: Connection) -> None:
    conn.execute(insert(ledger_nodes).values(level=STRATUM, idx=99, hash=b"\x11" * 32))


def alter_head_root(conn: Connection) -> None:
    conn.execute(update(ledger_head).values(root=b"\x22" * 32))


def alter_checkpoint(conn: Connection) -> None:
    note = conn.execute(select(ledger_checkpoints.c.note).where(ledger_checkpoints.c.size == 41)).scalar_one()
    lines = note.split("\n")
    lines[1] = "40"
    conn.execute(update(ledger_checkpoints).where(ledger_checkpoints.c.size == 41).values(note="\n".join(lines)))


TAMPERS: dict[str, tuple[Callable[[Connection], None], str]] = {
    "change data": (change_data, "stored leaf hash does not match"),
    "change data and hash": (change_data_and_hash, "signed root differs|interior node .* altered"),
    "change type column": (change_kind, "does not match the event's own type"),
    "delete a row": (delete_row, "entry 12: missing"),
    "delete the last row": (delete_last_row, "checkpoint at size 72 has no ledger.checkpoint entry"),
    "reorder rows": (reorder_rows, "signed root differs|interior node .* altered"),
    "insert a row": (insert_row, "log head says size 73"),
    "alter a cached node": (alter_node, "interior node .* altered"),
    "delete a cached node": (delete_node, "interior node .* missing"),
    "insert a cached node": (insert_node, "does not belong to the log"),
    "alter the head": (alter_head_root, "head root differs"),
    "alter a checkpoint": (alter_checkpoint, "log signature is invalid"),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tamper_is_detected(logged: Workspace, name: str) -> None:
    tamper, message = TAMPERS[name]
    with logged.store.write() as conn:
        tamper(conn)
    report = verify_ledger(logged.ledger)
    assert not report.ok
    assert report.problem is not None
    assert re.search(message, report.problem), report.problem


def test_truncate_and_reappend_is_detected(logged: Workspace) -> None:
    """Rewrite history after entry 20 consistently (entries, nodes, head): the signed checkpoints catch it."""
    with logged.store.write() as conn:
        kept = [
            bytes(h)
            for h in conn.execute(
                select(ledger_entries.c.leaf_hash).where(ledger_entries.c.seq < 20).order_by(ledger_entries.c.seq)
            ).scalars()
        ]
        conn.execute(delete(ledger_entries).where(ledger_entries.c.seq >= 20))
        conn.execute(delete(ledger_nodes))
        tree = merkle.CompactRange()
        nodes = [{"level": level, "idx": idx, "hash": nh} for level, idx, nh in tree.extend(kept, STRATUM)]
        if nodes:
            conn.execute(insert(ledger_nodes), nodes)
        conn.execute(update(ledger_head).values(size=20, root=tree.root(), frontier=tree.encode()))
    with logged.store.write() as conn:  # back to size 71 with different events
        logged.ledger.append_many(conn, [probe(1000 + i) for i in range(51)])
    assert logged.ledger.head().size == 71
    report = verify_ledger(logged.ledger)
    assert not report.ok and "signed root differs" in (report.problem or "")


def test_cli_verify_exit_codes(logged: Workspace) -> None:
    cmd = [sys.executable, "-m", "complai.cli.main", "--workspace", str(logged.path), "ledger", "verify"]
    ok = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "ledger intact" in ok.stdout
    with logged.store.write() as conn:
        delete_row(conn)
    bad = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "entry 12: missing" in bad.stderr
    assert "Traceback" not in bad.stderr
