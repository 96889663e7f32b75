"""Ingest benchmark: peak memory and throughput of a streamed, chunked ingest of 10^5, 10^6 and 10^7 CSV
rows, each into a fresh workspace in a child process, against two baselines in the same run.

    python benchmarks/ingest.py [--rows 100000,1000000,10000000] [--out FILE] [--dir DIR]

The file: order_id (the record key), customer_id (four orders per subject), amount, segment; written
streaming to a temporary directory. complai: `dataset ingest` through the session, mode insert (both
passes: check every row and collect record keys, then encrypt and store), on SQLite. Baselines, each
in its own child on the same file: `pandas.read_csv` (the whole file in memory, as ingest held it
before it was streamed), and a plain SQLite `executemany` insert of the rows, read with the csv module
in chunks of the same size (unencrypted, no validation, no ledger). Peak memory is the child's
maximum resident set size (getrusage via wait4).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results

console = Console()
CHUNK = 50_000
SCHEMA = """
name: orders
subject_column: customer_id
jurisdiction: EU
retention: P365D
purposes: [customer_support]
record_key: order_id
fields:
  - {name: customer_id, type: string, category: user.unique_id, nullable: false}
  - {name: order_id, type: string, category: system.operations, nullable: false}
  - {name: amount, type: integer, category: user.financial, min: 0, max: 100000}
  - {name: segment, type: category, category: user.behavior, values: [retail, premium]}
"""


def write_csv(path: Path, n: int) -> int:
    """n rows, streamed to disk; returns the file's size."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["customer_id", "order_id", "amount", "segment"])
        for start in range(0, n, CHUNK):
            w.writerows(
                (f"S{i // 4:09d}", f"O{i:010d}", (i * 7919) % 100_000, "premium" if i % 3 else "retail")
                for i in range(start, min(n, start + CHUNK))
            )
    return path.stat().st_size


def child_complai(csv_path: str, home: str) -> dict[str, Any]:
    from complai.app.workspace import Workspace

    ws = Workspace.init(Path(home))
    try:
        session = ws.session("owner", "administration")
        session.create_dataset(session.parse_schema(SCHEMA))
        t0 = time.perf_counter()
        result = session.ingest("orders", Path(csv_path))
        seconds = time.perf_counter() - t0
    finally:
        ws.close()
    return {"seconds": seconds, "rows": result.rows}


def child_pandas(csv_path: str, home: str) -> dict[str, Any]:
    import pandas as pd

    t0 = time.perf_counter()
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return {"seconds": time.perf_counter() - t0, "rows": len(frame)}


def child_sqlite(csv_path: str, home: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    db = sqlite3.connect(Path(home) / "plain.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE orders (order_id TEXT PRIMARY KEY, customer_id TEXT, amount INTEGER, segment TEXT)")
    db.execute("CREATE INDEX ix_orders_customer ON orders (customer_id)")
    rows = 0
    with open(csv_path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        while True:
            part = [(o, c, int(a), s) for c, o, a, s in (r for _, r in zip(range(CHUNK), reader, strict=False))]
            if not part:
                break
            db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", part)
            rows += len(part)
    db.commit()
    db.close()
    return {"seconds": time.perf_counter() - t0, "rows": rows}


CHILDREN = {"complai": child_complai, "pandas.read_csv": child_pandas, "sqlite executemany": child_sqlite}


def run_child(kind: str, csv_path: Path, home: Path) -> dict[str, Any]:
    """One measurement in a fresh process: its result and its peak RSS (MiB)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, str(csv_path), str(home)],
        stdout=subprocess.PIPE,
        env={**os.environ, "COMPLAI_WORKSPACE": str(home)},
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime  # the whole child, start-up included
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="100000,1000000,10000000")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest.json"))
    ap.add_argument("--dir", type=Path, default=None, help="Where to write the CSVs and workspaces.")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, csv_path, home = args.child
        print(json.dumps(CHILDREN[kind](csv_path, home)))
        return
    sizes = [int(x) for x in args.rows.split(",")]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in sizes:
            csv_path = Path(tmp) / f"orders_{n}.csv"
            size = write_csv(csv_path, n)
            entry: dict[str, Any] = {"rows": n, "file_mib": size / 2**20}
            for kind in CHILDREN:
                home = Path(tmp) / f"{kind.split()[0].replace('.', '_')}_{n}"
                home.mkdir()
                entry[kind] = run_child(kind, csv_path, home)
                console.print(f"{n:,} rows, {kind}: {entry[kind]}")
                subprocess.run(["rm", "-rf", str(home)], check=True)
            csv_path.unlink()
            runs.append(entry)
            write_results(args.out, {"benchmark": "ingest", "chunk_rows": CHUNK, "runs": runs})
    t = Table(title="streamed ingest: peak RSS and throughput (SQLite)")
    for col in (
        "rows",
        "file MiB",
        "complai MiB",
        "complai rows/s",
        "pandas MiB",
        "sqlite rows/s",
        "mem ratio",
        "speed ratio",
    ):
        t.add_column(col, justify="right")
    for e in runs:
        c, p, q = e["complai"], e["pandas.read_csv"], e["sqlite executemany"]
        t.add_row(
            f"{e['rows']:,}",
            f"{e['file_mib']:,.0f}",
            f"{c['peak_rss_mib']:,.0f}",
            f"{c['rows_per_s']:,.0f}",
            f"{p['peak_rss_mib']:,.0f}",
            f"{q['rows_per_s']:,.0f}",
            f"{c['peak_rss_mib'] / p['peak_rss_mib']:.2f}x",
            f"{q['rows_per_s'] / c['rows_per_s']:.1f}x slower",
        )
    console.print(t)
    console.print(f"results in {args.out}")


if __name__ == "__main__":
    main()
