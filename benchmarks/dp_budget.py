"""Privacy-budget benchmark: what checking a spend against the ledger adds to a reservation (reserve and
its dp.spent event, in one transaction), on a short ledger and on a long one (200,000 entries with
2,000 spends on another dataset), against the same reservation without the check and against a check
that replays every spend event (no mark). SQLite, and PostgreSQL when it is reachable.

    python benchmarks/dp_budget.py [--out FILE] [--reps N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import delete

from complai.app.workspace import Workspace
from complai.dp.budget import Budgets
from complai.events import BudgetSpent
from complai.store.tables import meta
from complai.vault.schema import load_schema

sys.path.insert(0, str(Path(__file__).parent))
from common import pg_available, pg_database, write_results

console = Console()
SCHEMA = {
    "name": "customers",
    "subject_column": "customer_id",
    "jurisdiction": "EU",
    "retention": "P30D",
    "purposes": {"analytics": "gdpr.legitimate_interests"},
    "fields": [
        {"name": "customer_id", "type": "string", "category": "user.unique_id", "identifier": "direct"},
        {"name": "income", "type": "integer", "category": "user.financial.income", "min": 0, "max": 10_000_000},
    ],
}
FILLER = b'{"type":"x.filler","v":1,"pad":"' + b"a" * 300 + b'"}'


def workspace(root: Path, url: str | None, filler: int, other: int) -> Workspace:
    ws = Workspace.init(root, database_url=url)
    for name in ("customers", "other"):
        ws.catalog.register(load_schema(dict(SCHEMA, name=name), ws.taxonomy), actor="owner")
        ws.budgets.set("owner", name, 1e9, 1e-6)
    for i in range(0, filler, 20_000):
        with ws.store.write() as conn:
            ws.ledger.append_raw(conn, [("x.filler", FILLER)] * min(20_000, filler - i))
    for _ in range(other):
        ws.budgets.spend("owner", "other", "analytics", 1e-6, "q", "laplace", eps=1e-6)
    ws.budgets.spend("owner", "customers", "analytics", 1e-6, "q", "laplace", eps=1e-6)
    return ws


def spend_ms(ws: Workspace, before: Callable[[], None] = lambda: None) -> float:
    before()
    t0 = time.perf_counter()
    with ws.store.write() as conn:
        ws.budgets.reserve(conn, "customers", "owner", "q", "laplace", eps=1e-6)
        ws.ledger.append(
            conn,
            BudgetSpent(
                time=ws.clock.now(),
                actor="owner",
                purpose="analytics",
                dataset="customers",
                rho=0.0,
                epsilon=1e-6,
                delta=0.0,
                mechanism="laplace",
                epsilon_remaining=1.0,
            ),
        )
        elapsed = time.perf_counter() - t0
    return elapsed * 1e3


def measure(ws: Workspace, reps: int) -> dict[str, float]:
    real = Budgets._reconcile
    with_check, without = [], []
    for i in range(2 * reps):  # interleaved, so that load on the machine hits both alike
        if i % 2:
            Budgets._reconcile = lambda self, conn, dataset, rows, write=True: None  # type: ignore[method-assign]
            try:
                without.append(spend_ms(ws))
            finally:
                Budgets._reconcile = real  # type: ignore[method-assign]
        else:
            with_check.append(spend_ms(ws))

    def drop_marks() -> None:
        with ws.store.write() as conn:
            conn.execute(delete(meta).where(meta.c.key.like("dp.mark:%")))

    full = [spend_ms(ws, drop_marks) for _ in range(max(5, reps // 10))]
    return {
        "with_check_ms": statistics.median(with_check),
        "without_check_ms": statistics.median(without),
        "full_replay_ms": statistics.median(full),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/dp_budget.json"))
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    backends: list[tuple[str, Any]] = [("sqlite", None)]
    if pg_available():
        backends.append(("postgresql", pg_database))
    for backend, make_db in backends:
        for filler, other in ((0, 0), (200_000, 2_000)):
            with tempfile.TemporaryDirectory() as tmp:
                if make_db is None:
                    ws = workspace(Path(tmp) / "ws", None, filler, other)
                    result = measure(ws, args.reps)
                    size = ws.ledger.head().size
                    ws.close()
                else:
                    with make_db() as url:
                        ws = workspace(Path(tmp) / "ws", url, filler, other)
                        result = measure(ws, args.reps)
                        size = ws.ledger.head().size
                        ws.close()
            rows.append({"backend": backend, "ledger_entries": size, "spends_elsewhere": other, **result})
    t = Table("backend", "ledger entries", "without check", "with check", "added", "no mark (full replay)")
    for r in rows:
        t.add_row(
            r["backend"],
            f"{r['ledger_entries']:,}",
            f"{r['without_check_ms']:.2f} ms",
            f"{r['with_check_ms']:.2f} ms",
            f"+{r['with_check_ms'] - r['without_check_ms']:.2f} ms",
            f"{r['full_replay_ms']:.2f} ms",
        )
    console.print(t)
    write_results(args.out, {"reserve": rows})


if __name__ == "__main__":
    main()
