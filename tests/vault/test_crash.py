"""SIGKILL in the middle of an ingest or a key rotation leaves a consistent workspace; nothing
acknowledged is lost, and an interrupted rotation resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from sqlalchemy import func, select

from complai.app.workspace import Workspace
from complai.ledger.verify import verify_ledger
from complai.store.tables import subject_keys
from tests.vault.conftest import PEOPLE


def cli(ws: Workspace, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "COMPLAI_WORKSPACE": str(ws.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "complai.cli.main", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def big_csv(path: Path, n: int, prefix: str) -> Path:
    pd.DataFrame(
        {
            "customer_id": [f"{prefix}{i:07d}" for i in range(n)],
            "full_name": "Person",
            "income": [i % 90_000 for i in range(n)],
            "segment": "retail",
        }
    ).to_csv(path, index=False)
    return path


def kill_when(proc: subprocess.Popen[bytes], ready: callable, timeout: float = 60) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.stderr.read()!r}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_during_ingest(customers: Workspace, tmp_path: Path) -> None:
    csv = big_csv(tmp_path / "big.csv", 120_000, "K")
    before = customers.vault.counts()
    head = customers.ledger.head().size
    started = time.monotonic()
    proc = cli(customers, "dataset", "ingest", "customers", str(csv))
    # the ingest is one transaction of several seconds; kill it well inside
    kill_when(proc, lambda: time.monotonic() - started > 2.5)
    customers.store.dispose()
    with Workspace.open(customers.path, clock=customers.clock) as ws:
        assert verify_ledger(ws.ledger).ok
        after = ws.vault.counts()
        assert after == before  # all or nothing: the killed ingest left nothing
        assert ws.ledger.head().size == head
        assert set(ws.session("owner", "customer_support").read("customers")["customer_id"]) == {p[0] for p in PEOPLE}


def _under_old_kek(ws: Workspace) -> int:
    with ws.store.read() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(subject_keys).where(subject_keys.c.kek_version == 1)
            ).scalar_one()
        )


def test_sigkill_during_rotation_then_resume(customers: Workspace, tmp_path: Path) -> None:
    customers.vault.ingest("customers", big_csv(tmp_path / "more.csv", 12_000, "R"), actor="owner")
    total = customers.vault.counts()["data_keys"]
    proc = cli(customers, "keys", "rotate", "--batch-size", "5")
    kill_when(proc, lambda: 0 < _under_old_kek(customers) < total - 100)
    customers.store.dispose()
    with Workspace.open(customers.path, clock=customers.clock) as ws:
        assert verify_ledger(ws.ledger).ok
        status = ws.keys.status()
        assert status["kek_current"] == 2 and 0 < status["rotation_pending"] < total  # type: ignore[operator]
        # every record is still readable, whichever KEK wraps its key
        assert len(ws.session("owner", "customer_support").read("customers")) == 4 + 12_000
        result = ws.keys.rotate("owner")
        assert result["resumed"] and result["to_version"] == 2 and result["retired"] == [1]
        assert ws.keys.status()["deks_by_kek_version"] == {"2": total}
        assert len(ws.session("owner", "customer_support").read("customers")) == 4 + 12_000


def test_nothing_acknowledged_is_lost_across_a_kill(customers: Workspace, tmp_path: Path) -> None:
    """An ingest that returned (exit 0) survives a later kill of another writer."""
    done = cli(customers, "dataset", "ingest", "customers", str(big_csv(tmp_path / "s.csv", 10, "A")))
    assert done.wait() == 0
    started = time.monotonic()
    proc = cli(customers, "dataset", "ingest", "customers", str(big_csv(tmp_path / "b.csv", 120_000, "B")))
    kill_when(proc, lambda: time.monotonic() - started > 2.5)
    customers.store.dispose()
    with Workspace.open(customers.path, clock=customers.clock) as ws:
        assert ws.vault.counts()["records"] == 4 + 10
        assert verify_ledger(ws.ledger).ok
