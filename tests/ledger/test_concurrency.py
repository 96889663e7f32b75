"""Concurrent writers (processes and threads) lose nothing and leave one consistent tree."""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
from collections import Counter
from pathlib import Path

from complai.app.workspace import Workspace
from complai.ledger.verify import verify_ledger
from tests.ledger.helpers import probe

WORKERS = 4
PER_WORKER = 30


def _append_worker(path: str, worker: int, barrier: mp.synchronize.Barrier) -> None:  # type: ignore[name-defined]
    with Workspace.open(Path(path)) as ws:
        barrier.wait()
        for i in range(PER_WORKER):
            if i % 10 == 9:  # a few batches among the single appends
                with ws.store.write() as conn:
                    ws.ledger.append_many(conn, [probe(worker * 1000 + i), probe(worker * 1000 + 500 + i)])
            else:
                ws.ledger.record(probe(worker * 1000 + i))


def expected_count() -> int:
    return WORKERS * (PER_WORKER + PER_WORKER // 10)


def check(ws: Workspace) -> None:
    report = verify_ledger(ws.ledger)
    assert report.ok, report.problem
    assert report.size == 1 + expected_count()
    ns = Counter(json.loads(e.data)["n"] for e in ws.ledger.entries(kind="test.probe"))
    assert len(ns) == expected_count() and set(ns.values()) == {1}


def test_processes_appending_at_once(ws: Workspace) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_append_worker, args=(str(ws.path), w, barrier)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    check(ws)


def test_threads_appending_at_once(ws: Workspace) -> None:
    barrier = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(PER_WORKER):
                if i % 10 == 9:
                    with ws.store.write() as conn:
                        ws.ledger.append_many(conn, [probe(worker * 1000 + i), probe(worker * 1000 + 500 + i)])
                else:
                    ws.ledger.record(probe(worker * 1000 + i))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    check(ws)
