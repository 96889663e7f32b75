"""Access benchmark: policy decisions per second at 100 / 1,000 / 10,000 rules (pycasbin alone, and
complai's decision cache keyed on the policy version), and what authorisation plus the ledger record
add to a 1,000-row governed read.

    python benchmarks/access.py [--out FILE]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from complai.access.identity import bump_policy_version
from complai.access.policy import ACTIONS, new_enforcer
from complai.app.workspace import Workspace
from complai.datasets import adult_schema_path, load_adult
from complai.store import bulk_insert
from complai.store.tables import policy_rules
from complai.vault.schema import load_schema

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results

console = Console()
PURPOSES = ["credit_scoring", "marketing", "analytics", "fraud_detection", "train_ai_system"]


def random_rules(n: int, rng: random.Random) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            f"p{rng.randrange(n)}",
            f"ds{rng.randrange(max(1, n // 10))}",
            rng.choice(ACTIONS),
            rng.choice(PURPOSES),
            "allow",
        )
        for _ in range(n)
    ]


def decisions(n_rules: int, ws: Workspace) -> dict[str, Any]:
    rng = random.Random(n_rules)
    rules = random_rules(n_rules, rng)
    requests = [
        (
            f"p{rng.randrange(n_rules)}",
            f"ds{rng.randrange(max(1, n_rules // 10))}",
            rng.choice(ACTIONS),
            rng.choice(PURPOSES),
        )
        for _ in range(2000)
    ]
    # pycasbin alone
    enforcer = new_enforcer(rules, [])
    k = 300 if n_rules >= 10_000 else 2000
    t0 = time.perf_counter()
    for r in requests[:k]:
        enforcer.enforce(*r)
    raw = (time.perf_counter() - t0) / k
    # through complai: rules in the store, decisions cached per policy version
    now = datetime.now(UTC)
    with ws.store.write() as conn:
        conn.execute(policy_rules.delete())
        bulk_insert(
            conn,
            policy_rules,
            [(*r, "bench", now) for r in rules],
            columns=("subject", "domain", "action", "purpose", "effect", "created_by", "created_at"),
        )
        bump_policy_version(conn)
    ws.policy.cache = True
    ws.policy.decide(*requests[0])  # load
    t0 = time.perf_counter()
    for r in requests:  # first pass: every distinct request is evaluated once
        ws.policy.decide(*r)
    first = (time.perf_counter() - t0) / len(requests)
    t0 = time.perf_counter()
    for r in requests:
        ws.policy.decide(*r)
    cached = (time.perf_counter() - t0) / len(requests)
    out = {
        "rules": n_rules,
        "casbin_ms": raw * 1e3,
        "complai_first_ms": first * 1e3,
        "complai_cached_ms": cached * 1e3,
        "casbin_per_s": 1 / raw,
        "cached_per_s": 1 / cached,
    }
    console.print(
        f"  {n_rules:,} rules: casbin {raw * 1e3:.3f} ms, complai first {first * 1e3:.3f} ms, "
        f"cached {cached * 1e3:.3f} ms"
    )
    return out


def read_overhead(ws: Workspace, reps: int = 30) -> dict[str, Any]:
    ws.catalog.register(load_schema(adult_schema_path(), ws.taxonomy), actor="owner")
    df = load_adult().drop(columns=["split"]).iloc[:1000]
    ws.vault.ingest("adult", df, actor="owner")
    ws.identity.add("owner", "analyst1", "service")
    ws.policy.add("owner", "analyst1", "adult", "read", "analytics")
    session = ws.session("analyst1", "analytics")
    session.read("adult")  # warm caches
    bare, full = [], []
    for _ in range(reps):  # alternate: the read itself, then the governed read (check + read + ledger event)
        t0 = time.perf_counter()
        frame, *_ = ws.vault.fetch("adult", "analytics")
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        session.read("adult")
        full.append(time.perf_counter() - t0)
    b, f = statistics.median(bare), statistics.median(full)
    out = {"rows": len(frame), "read_ms": b * 1e3, "governed_read_ms": f * 1e3, "overhead_pct": (f - b) / b * 100}
    console.print(f"  1,000-row read: {b * 1e3:.2f} ms bare, {f * 1e3:.2f} ms governed (+{out['overhead_pct']:.1f}%)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/access.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="complai-access-bench-"))
    with Workspace.init(tmp / "ws") as ws:
        console.rule("policy decisions")
        dec = [decisions(n, ws) for n in (100, 1000, 10_000)]
    with Workspace.init(tmp / "ws2") as ws:
        console.rule("governed read")
        read = read_overhead(ws)
    t = Table(
        "rules", "pycasbin ms/decision", "decisions/s", "complai cached ms", "decisions/s", title="Policy decisions"
    )
    for d in dec:
        t.add_row(
            f"{d['rules']:,}",
            f"{d['casbin_ms']:.3f}",
            f"{d['casbin_per_s']:,.0f}",
            f"{d['complai_cached_ms']:.3f}",
            f"{d['cached_per_s']:,.0f}",
        )
    console.print(t)
    write_results(args.out, {"decisions": dec, "read": read})
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
