"""Ledger benchmark: durable append rate vs a plain insert, proof cost vs log size, verify throughput.

    python benchmarks/ledger.py [--sizes 1e4,1e6,1e7] [--postgres URL] [--out FILE]

Appends are measured on SQLite (WAL, synchronous=FULL) and, when a server is reachable, PostgreSQL;
the baseline inserts the same rows (seq, type, canonical bytes, type index) into a plain table in the
same database with the same transaction pattern. Runs alternate ledger/plain and report medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import BigInteger, Column, Index, LargeBinary, MetaData, String, text
from sqlalchemy import Table as SATable

from complai.app.workspace import Workspace
from complai.crypto.digest import digest
from complai.events import Event
from complai.ledger import merkle
from complai.ledger.verify import verify_ledger

sys.path.insert(0, str(Path(__file__).parent))
from common import DEFAULT_PG, pg_available, pg_database

console = Console()


class BenchAccess(Event):
    """Shaped like a governed read event: pseudonymous subject, dataset, digest."""

    kind: ClassVar[str] = "bench.access"
    dataset: str
    subject: str
    rows: int
    digest: str


def events(start: int, n: int) -> list[tuple[str, bytes]]:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(start, start + n):
        e = BenchAccess(
            time=t,
            actor="analyst",
            purpose="credit_scoring",
            dataset="adult",
            subject="sp:" + digest(str(i).encode())[7:],
            rows=i % 1000,
            digest=digest(i.to_bytes(8, "big")),
        )
        out.append((e.kind, e.canonical()))
    return out


plain_meta = MetaData()
plain = SATable(
    "bench_plain",
    plain_meta,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("ix_bench_plain_kind", "kind"),
)


def append_rates(ws: Workspace, label: str, reps: int = 3) -> list[dict[str, Any]]:
    plain_meta.create_all(ws.store.engine)
    modes = [("single", 1, 1500), ("batch 100", 100, 30_000), ("batch 1000", 1000, 100_000)]
    results = []
    pool = events(0, 100_000)
    ph = "?" if ws.store.engine.dialect.paramstyle == "qmark" else "%s"
    # the same driver-level executemany the ledger uses, so the ratio is the log's own cost
    plain_sql = f"INSERT INTO bench_plain (seq, kind, data) VALUES ({ph}, {ph}, {ph})"
    for name, batch, total in modes:
        rates: dict[str, list[float]] = {"ledger": [], "plain": []}
        for _ in range(reps):
            for which in ("ledger", "plain"):
                plain_seq = _plain_next(ws)
                t0 = time.perf_counter()
                for off in range(0, total, batch):
                    chunk = pool[off % len(pool) : off % len(pool) + batch]
                    with ws.store.write() as conn:
                        if which == "ledger":
                            ws.ledger.append_raw(conn, chunk)
                        else:
                            rows = [(plain_seq + off + j, k, d) for j, (k, d) in enumerate(chunk)]
                            conn.exec_driver_sql(plain_sql, rows)
                rates[which].append(total / (time.perf_counter() - t0))
        led, pl = statistics.median(rates["ledger"]), statistics.median(rates["plain"])
        results.append({"backend": label, "mode": name, "ledger_per_s": led, "plain_per_s": pl, "overhead": pl / led})
        console.print(f"  {label} {name}: ledger {led:,.0f}/s, plain {pl:,.0f}/s, overhead {pl / led:.2f}x")
    return results


def _plain_next(ws: Workspace) -> int:
    with ws.store.read() as conn:
        return int(conn.execute(text("SELECT COALESCE(MAX(seq), -1) + 1 FROM bench_plain")).scalar_one())


def grow(ws: Workspace, target: int, bar: Progress, task: Any) -> None:
    size = ws.ledger.head().size
    batch = 20_000
    template = events(0, batch)
    while size < target:
        k = min(batch, target - size)
        # reuse shapes, vary the bytes so no two leaves are equal
        chunk = [(kind, data[:-1] + b',"i":%d}' % (size + j)) for j, (kind, data) in enumerate(template[:k])]
        with ws.store.write() as conn:
            ws.ledger.append_raw(conn, chunk)
        size += k
        bar.update(task, completed=size)


def proof_costs(ws: Workspace, samples: int = 1000) -> dict[str, Any]:
    head = ws.ledger.head()
    n, root = head.size, head.root
    rnd = random.Random(7)
    idx = [rnd.randrange(n) for _ in range(samples)]
    with ws.store.read() as conn:
        leaves = {i: ws.ledger.entry(i, conn).leaf_hash for i in idx}
        t0 = time.perf_counter()
        proofs = [ws.ledger.inclusion_proof(i, n, conn) for i in idx]
        gen = (time.perf_counter() - t0) / samples
        olds = [rnd.randrange(1, n) for _ in range(samples // 4)]
        t0 = time.perf_counter()
        cproofs = [ws.ledger.consistency_proof(o, n, conn) for o in olds]
        cgen = (time.perf_counter() - t0) / len(olds)
        old_roots = [ws.ledger.root_at(o, conn) for o in olds]
    t0 = time.perf_counter()
    for i, p in zip(idx, proofs, strict=True):
        merkle.verify_inclusion(i, n, leaves[i], p, root)
    ver = (time.perf_counter() - t0) / samples
    t0 = time.perf_counter()
    for o, r, p in zip(olds, old_roots, cproofs, strict=True):
        merkle.verify_consistency(o, n, r, root, p)
    cver = (time.perf_counter() - t0) / len(olds)
    return {
        "size": n,
        "inclusion_gen_ms": gen * 1e3,
        "inclusion_verify_ms": ver * 1e3,
        "inclusion_hashes": statistics.mean(len(p) for p in proofs),
        "consistency_gen_ms": cgen * 1e3,
        "consistency_verify_ms": cver * 1e3,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1e4,1e6,1e7", help="log sizes for proof costs")
    ap.add_argument("--verify-max", type=float, default=1e6, help="largest size for a full verify run")
    ap.add_argument(
        "--postgres",
        default=DEFAULT_PG,
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ledger.json"))
    args = ap.parse_args()
    sizes = sorted(int(float(s)) for s in args.sizes.split(","))
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}

    console.rule("durable appends")
    tmp = Path(tempfile.mkdtemp(prefix="complai-bench-"))
    appends = []
    with Workspace.init(tmp / "sqlite") as ws:
        appends += append_rates(ws, "sqlite")
    if pg_available(args.postgres):
        with pg_database(args.postgres) as url, Workspace.init(tmp / "pg", database_url=url) as ws:
            appends += append_rates(ws, "postgresql")
    else:
        console.print("  PostgreSQL not reachable; skipping its append numbers")
    result["appends"] = appends

    console.rule("proofs and verification (SQLite)")
    proofs, verifies = [], []
    with Workspace.init(tmp / "big") as ws:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            task = bar.add_task("growing the log", total=sizes[-1])
            for size in sizes:
                t0 = time.perf_counter()
                grow(ws, size, bar, task)
                bar.console.print(f"  grew to {size:,} in {time.perf_counter() - t0:.1f}s")
                p = proof_costs(ws)
                proofs.append(p)
                bar.console.print(
                    f"  size {size:,}: inclusion proof {p['inclusion_gen_ms']:.3f} ms + verify "
                    f"{p['inclusion_verify_ms']:.3f} ms; consistency {p['consistency_gen_ms']:.3f} ms"
                )
                if size <= args.verify_max:
                    t0 = time.perf_counter()
                    report = verify_ledger(ws.ledger)
                    dt = time.perf_counter() - t0
                    assert report.ok, report.problem
                    verifies.append({"size": report.size, "seconds": dt, "entries_per_s": report.size / dt})
                    bar.console.print(f"  full verify of {report.size:,}: {dt:.1f}s ({report.size / dt:,.0f}/s)")
        db = tmp / "big" / "complai.db"
        result["db_bytes_per_entry"] = db.stat().st_size / max(1, ws.ledger.head().size)
    result["proofs"] = proofs
    result["verify"] = verifies

    t = Table("backend", "mode", "ledger/s", "plain/s", "plain ÷ ledger", title="Durable appends")
    for a in appends:
        t.add_row(
            a["backend"], a["mode"], f"{a['ledger_per_s']:,.0f}", f"{a['plain_per_s']:,.0f}", f"{a['overhead']:.2f}x"
        )
    console.print(t)
    t = Table("log size", "inclusion gen ms", "verify ms", "hashes", "consistency gen ms", title="Proofs")
    for p in proofs:
        t.add_row(
            f"{p['size']:,}",
            f"{p['inclusion_gen_ms']:.3f}",
            f"{p['inclusion_verify_ms']:.3f}",
            f"{p['inclusion_hashes']:.1f}",
            f"{p['consistency_gen_ms']:.3f}",
        )
    console.print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    console.print(f"results written to {args.out}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
