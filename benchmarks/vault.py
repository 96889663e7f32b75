"""Vault benchmark: encrypted ingest and governed reads vs the same rows in plain, key rotation per
100k subjects, erasure latency; on SQLite and PostgreSQL.

    python benchmarks/vault.py [--rows 100000] [--out FILE]

Baseline ("plain"): the same validated rows, serialised the same way, inserted unencrypted into a table
with the same columns and indexes in the same database, through the same driver-level executemany;
the plain read selects them back and builds the same typed DataFrame.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from sqlalchemy import BigInteger, Column, Index, LargeBinary, MetaData, String, select
from sqlalchemy import Table as SATable

from complai.app.workspace import Workspace
from complai.clock import to_us
from complai.datasets import adult_schema_path, load_adult
from complai.store import bulk_insert
from complai.vault.records import decode, encode, prepare, to_frame
from complai.vault.schema import load_schema

sys.path.insert(0, str(Path(__file__).parent))
from common import DEFAULT_PG, pg_available, pg_database, write_results

console = Console()

plain_meta = MetaData()
plain = SATable(
    "bench_plain_records",
    plain_meta,
    Column("rid", LargeBinary(16), primary_key=True),
    Column("dataset", String(128), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("ix_bpr_dataset_subject", "dataset", "subject"),
    Index("ix_bpr_subject", "subject"),
    Index("ix_bpr_dataset_expires", "dataset", "expires_us"),
)


def adult_rows(n: int, per_subject: int, tag: str) -> pd.DataFrame:
    base = load_adult().drop(columns=["split"])
    reps = -(-n // len(base))
    df = pd.concat([base] * reps, ignore_index=True).iloc[:n].copy()
    df["subject_id"] = [f"{tag}{i // per_subject:08d}" for i in range(n)]
    return df


def plain_ingest(ws: Workspace, df: pd.DataFrame) -> float:
    schema = ws.catalog.get("adult").schema
    t0 = time.perf_counter()
    subjects, rows = prepare(schema, df)
    now = to_us(ws.clock.now())
    data = [(os.urandom(16), "adult", s, now, now + 10**15, encode(v)) for s, v in zip(subjects, rows, strict=True)]
    with ws.store.write() as conn:
        bulk_insert(conn, plain, data)
    return time.perf_counter() - t0


def plain_read(ws: Workspace) -> tuple[float, int]:
    schema = ws.catalog.get("adult").schema
    t0 = time.perf_counter()
    with ws.store.read() as conn:
        rows = conn.execute(select(plain.c.subject, plain.c.data).where(plain.c.dataset == "adult")).all()
    frame = to_frame(schema, [f.name for f in schema.fields], [r[0] for r in rows], [decode(r[1]) for r in rows])
    return time.perf_counter() - t0, len(frame)


def run_backend(label: str, ws: Workspace, n: int) -> dict[str, Any]:
    ws.catalog.register(load_schema(adult_schema_path(), ws.taxonomy), actor="owner")
    plain_meta.create_all(ws.store.engine)
    out: dict[str, Any] = {"backend": label, "rows": n}
    # 1. one row per subject: every row brings a new subject (pseudonym, data key, sealed identity)
    new = adult_rows(n, 1, "N")
    t_enc = time.perf_counter()
    ws.vault.ingest("adult", new, actor="owner")
    t_enc = time.perf_counter() - t_enc
    t_plain = plain_ingest(ws, new)
    out["ingest_new_subjects"] = {"encrypted_rows_s": n / t_enc, "plain_rows_s": n / t_plain, "ratio": t_plain / t_enc}
    # 2. ten rows per subject, subjects already known (their keys are unwrapped, counters bumped)
    more = adult_rows(n, 10, "N")
    t_enc = time.perf_counter()
    ws.vault.ingest("adult", more, actor="owner")
    t_enc = time.perf_counter() - t_enc
    t_plain = plain_ingest(ws, more)
    out["ingest_known_subjects_10_per"] = {
        "encrypted_rows_s": n / t_enc,
        "plain_rows_s": n / t_plain,
        "ratio": t_plain / t_enc,
    }
    console.print(f"  {label} ingest: {out['ingest_new_subjects']}, {out['ingest_known_subjects_10_per']}")
    # 3. governed read of everything (analytics: legitimate interests, no consent filter) vs plain
    t0 = time.perf_counter()
    frame = ws.session("owner", "analytics").read("adult")
    t_read = time.perf_counter() - t0
    t_plain, n_plain = plain_read(ws)
    out["read"] = {
        "rows": len(frame),
        "governed_rows_s": len(frame) / t_read,
        "plain_rows_s": n_plain / t_plain,
        "ratio": t_plain / t_read,
    }
    console.print(f"  {label} read: {out['read']}")
    # 4. erasure latency on the populated workspace
    lat = []
    for i in range(20):
        t0 = time.perf_counter()
        ws.vault.erase(f"N{i:08d}", actor="owner")
        lat.append(time.perf_counter() - t0)
    out["erasure_ms"] = {"median": statistics.median(lat) * 1e3, "max": max(lat) * 1e3}
    # 5. key rotation: every data key re-wrapped under a new KEK
    keys = ws.vault.counts()["data_keys"]
    t0 = time.perf_counter()
    ws.keys.rotate("owner")
    t_rot = time.perf_counter() - t0
    out["rotation"] = {"data_keys": keys, "seconds": t_rot, "seconds_per_100k": t_rot * 100_000 / keys}
    console.print(f"  {label} erasure {out['erasure_ms']}, rotation {out['rotation']}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--postgres", default=DEFAULT_PG)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/vault.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="complai-vault-bench-"))
    results = []
    with Workspace.init(tmp / "sqlite") as ws:
        results.append(run_backend("sqlite", ws, args.rows))
    if pg_available(args.postgres):
        with pg_database(args.postgres) as url, Workspace.init(tmp / "pg", database_url=url) as ws:
            results.append(run_backend("postgresql", ws, args.rows))
    t = Table(
        "backend",
        "ingest new subj/s",
        "plain/s",
        "ratio",
        "ingest 10/subj/s",
        "plain/s",
        "ratio",
        "read rows/s",
        "plain/s",
        "ratio",
        "erase ms",
        "rotate s/100k",
    )
    for r in results:
        a, b, c = r["ingest_new_subjects"], r["ingest_known_subjects_10_per"], r["read"]
        t.add_row(
            r["backend"],
            f"{a['encrypted_rows_s']:,.0f}",
            f"{a['plain_rows_s']:,.0f}",
            f"{a['ratio']:.2f}",
            f"{b['encrypted_rows_s']:,.0f}",
            f"{b['plain_rows_s']:,.0f}",
            f"{b['ratio']:.2f}",
            f"{c['governed_rows_s']:,.0f}",
            f"{c['plain_rows_s']:,.0f}",
            f"{c['ratio']:.2f}",
            f"{r['erasure_ms']['median']:.1f}",
            f"{r['rotation']['seconds_per_100k']:.1f}",
        )
    console.print(t)
    write_results(args.out, {"results": results})
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
