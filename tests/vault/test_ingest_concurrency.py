"""Concurrent ingests of overlapping new subjects all succeed (insert-or-get), in separate processes:
each subject ends with one row, one data key, and every record readable."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.store.tables import subject_keys, subjects
from tests.vault.conftest import PEOPLE
from tests.vault.test_key_concurrency import frame, read_ids

WORKERS = 4
POOL = 200  # new subject ids shared by every worker
PER_WORKER = 150


def _share(worker: int) -> list[int]:
    """The pool indices this worker ingests: overlapping subsets, each in its own (shuffled) order."""
    rng = random.Random(worker)
    return rng.sample(range(POOL), PER_WORKER)


def _ingest(path: str, worker: int, barrier: mp.synchronize.Barrier) -> None:  # type: ignore[name-defined]
    pool = frame("N", POOL)
    pool["income"] += 1000 * worker  # each worker's rows are records of their own (the subjects overlap)
    with Workspace.open(Path(path), clock=ManualClock()) as ws:
        barrier.wait()
        ws.vault.ingest("customers", pool.iloc[_share(worker)], actor="owner")


def test_concurrent_ingests_of_overlapping_new_subjects_all_succeed(customers: Workspace) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_ingest, args=(str(customers.path), w, barrier)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    touched = sorted({i for w in range(WORKERS) for i in _share(w)})
    with customers.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(subjects)).scalar_one() == len(PEOPLE) + len(touched)
        per_subject = Counter(conn.execute(select(subject_keys.c.subject_id)).scalars())
    assert len(per_subject) == len(PEOPLE) + len(touched) and set(per_subject.values()) == {1}
    ids = read_ids(customers)  # every record decrypts, one per (worker, subject) ingested
    assert len(ids) == len(PEOPLE) + WORKERS * PER_WORKER
    assert Counter(ids) == Counter([p[0] for p in PEOPLE] + [f"N-{i}" for w in range(WORKERS) for i in _share(w)])
    counts = customers.vault.counts()
    assert counts["data_keys"] == len(PEOPLE) + len(touched)
    news = [json.loads(e.data)["new_subjects"] for e in customers.ledger.entries(kind="vault.ingested")][-WORKERS:]
    assert sum(news) == len(touched)  # each new subject counted once, by the ingest that created it
