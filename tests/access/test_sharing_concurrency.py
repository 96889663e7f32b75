"""Concurrent exports of one agreement: the use limit holds and every use has its own number, taken from
the locked agreement row, in separate processes."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.crypto.sealing import generate_keypair
from complai.errors import PolicyDenied

WORKERS = 4


def _export(path: str, aid: str, out: str, barrier: mp.synchronize.Barrier, results: mp.Queue) -> None:  # type: ignore[name-defined]
    with Workspace.open(Path(path), clock=ManualClock()) as ws:
        barrier.wait()
        try:
            results.put(("ok", ws.agreements.export("owner", aid, Path(out))["use"]))
        except PolicyDenied as exc:
            results.put(("denied", str(exc)))


def test_concurrent_exports_number_their_uses_from_the_locked_row(customers: Workspace, tmp_path: Path) -> None:
    public = generate_keypair(tmp_path / "bank.key")
    a = customers.agreements.create(
        "owner",
        "partner-bank",
        public,
        "customers",
        "credit_scoring",
        ["customer_id", "income"],
        max_uses=2,
        recipient_jurisdiction="EU",
    )
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    outs = [tmp_path / f"p{w}.pkg" for w in range(WORKERS)]
    procs = [
        ctx.Process(target=_export, args=(str(customers.path), a.id, str(outs[w]), barrier, results))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    got = sorted((results.get(timeout=300) for _ in procs), key=repr)
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    assert [g[0] for g in got] == ["denied", "denied", "ok", "ok"] and [g[1] for g in got[2:]] == [1, 2]
    assert all("can no longer be used" in str(g[1]) or "used 2 of 2" in str(g[1]) for g in got[:2])
    uses = sorted(json.loads(e.data)["use"] for e in customers.ledger.entries(kind="data.shared"))
    assert uses == [1, 2]
    assert customers.agreements.get(a.id).uses == 2
    assert sum(o.exists() for o in outs) == 2  # refused exports leave no file
