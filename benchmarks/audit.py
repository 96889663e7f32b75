"""Compliance audit time: full audits on workspaces with 10^4, 10^5 and 10^6 ledger events and 10^5
subjects, and incremental audits after 1 % and 10 % more events.

Each workspace holds 100,000 encrypted Adult-like records (the bundled rows repeated under new ids) with
their consents, a signed checkpoint cosigned by a witness, a DPIA, and a ledger filled to the size with a
realistic mix: 1 % governed reads that each reached 20 consented subjects (with their access-log rows,
so CONSENT-1 has work), the rest refused accesses by registered principals. The audit runs every
evaluated control (JSON report only, to time the engine rather than the rendering). Baseline in the same
run: the ledger's own full verification, which the audit includes.

Usage: python benchmarks/audit.py [--sizes 10000,100000,1000000] [--subjects 100000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results
from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.clock import utc_iso
from complai.datasets.adult import adult_schema_path, load_adult
from complai.events import AccessDenied, DataRead
from complai.ledger.verify import verify_ledger
from complai.ledger.witness import Witness, cosign_latest
from complai.store import bulk_insert
from complai.store.tables import access_log, consents, subjects
from complai.vault.schema import load_schema
from complai.vault.service import pack_ids, set_digest

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench" / "audit.json"
BATCH = 20_000


def build(path: Path, events: int, n_subjects: int) -> tuple[Workspace, list[int]]:
    ws = Workspace.init(path)
    admin = ws.session(OWNER, "administration")
    admin.create_dataset(load_schema(adult_schema_path(), ws.taxonomy))
    base = load_adult().drop(columns=["split"], errors="ignore")
    reps = -(-n_subjects // len(base))
    df = pd.concat([base] * reps, ignore_index=True).head(n_subjects)
    df["subject_id"] = [f"S{i:08d}" for i in range(len(df))]
    now = ws.clock.now()
    cons = pd.DataFrame(
        {
            "subject": df["subject_id"],
            "purpose": "credit_scoring",
            "granted_at": (now - pd.Timedelta(days=10)).isoformat(),
            "withdrawn_at": None,
            "notice_version": "bench",
            "source": "bench",
        }
    )
    admin.ingest("adult", df, cons)
    ws.identity.add(OWNER, "analyst-1", "service")
    with ws.store.read() as conn:
        consented = [
            int(x)
            for x in conn.execute(
                subjects.select()
                .with_only_columns(subjects.c.id)
                .where(subjects.c.id.in_(consents.select().with_only_columns(consents.c.subject_id)))
            ).scalars()
        ]
    fill(ws, events - ws.ledger.head().size, consented)
    witness = Witness.init(path.parent / f"witness-{events}", "w.bench.example")
    admin.trust_witness(witness.verifier)
    ws.session(OWNER, "audit").dpia_generate("adult")
    ws.session(OWNER, "audit").dpia_sign("adult", by="DPO")
    ws.ledger.checkpoint()
    cosign_latest(ws.ledger, witness, ws.clock.now(), int(time.time()))
    return ws, consented


def _canonical(event: Any) -> bytes:
    return event.canonical()


def fill(ws: Workspace, n: int, consented: list[int]) -> None:
    """Append n events: 1 % reads (20 consented subjects each, with access-log rows), the rest denials."""
    now = ws.clock.now()
    denied = AccessDenied(
        time=now, actor="analyst-1", purpose="marketing", action="read", dataset="adult", reason="no policy allows it"
    )
    denied_bytes = _canonical(denied)
    with ws.store.read() as conn:
        pseudonym = {int(i): str(p) for i, p in conn.execute(select(subjects.c.id, subjects.c.pseudonym))}

    def read(ids: list[int]) -> bytes:
        # each read names its own subjects' set digest, as a governed read does (RECON-1 checks the log)
        return _canonical(
            DataRead(
                time=now,
                actor=OWNER,
                purpose="credit_scoring",
                dataset="adult",
                columns=["age"],
                rows=20,
                subjects=20,
                records_in_dataset=len(consented),
                subjects_digest=set_digest(pseudonym[i] for i in ids),
            )
        )

    done, k = 0, 0
    while done < n:
        size = min(BATCH, n - done)
        items: list[tuple[str, bytes]] = []
        reads: list[list[int]] = []
        for i in range(size):
            if (done + i) % 100 == 0:
                ids = [consented[(k * 20 + j) % len(consented)] for j in range(20)]
                k += 1
                reads.append(ids)
                items.append(("vault.read", read(ids)))
            else:
                items.append(("access.denied", denied_bytes))
        with ws.store.write() as conn:
            seqs = ws.ledger.append_raw(conn, items)
            it = iter(reads)
            kinds = zip(seqs, items, strict=True)
            rows = [(seq, pack_ids(next(it))) for seq, (kind, _) in kinds if kind == "vault.read"]
            bulk_insert(conn, access_log, rows, columns=("seq", "subject_ids"))
        done += size


def report_last(ws: Workspace) -> object:
    from complai.app.ops.compliance import compliance_services
    from complai.compliance.report import last_audit

    return last_audit(compliance_services(ws.services))


def timed_audit(ws: Workspace, since_last: bool, out: Path) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    result = ws.session(OWNER, "audit").compliance_audit(out, ("json",), since_last=since_last)
    return time.perf_counter() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--subjects", type=int, default=100_000)
    args = ap.parse_args()
    results: dict[str, Any] = {"subjects": args.subjects, "runs": []}
    for n in [int(x) for x in args.sizes.split(",")]:
        tmp = Path(tempfile.mkdtemp(prefix="complai-audit-"))
        try:
            t0 = time.perf_counter()
            ws, consented = build(tmp / "ws", n, args.subjects)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ok = verify_ledger(ws.ledger).ok
            verify_s = time.perf_counter() - t0
            full_s, full = timed_audit(ws, False, tmp / "full")
            row: dict[str, Any] = {
                "events": ws.ledger.head().size,
                "build_s": round(build_s, 1),
                "ledger_verify_s": round(verify_s, 2),
                "full_audit_s": round(full_s, 2),
                "full_summary": full["summary"],
                "ledger_ok": ok,
            }
            for share in (0.01, 0.10):
                extra = int(n * share)
                fill(ws, extra, consented)
                inc_s, inc = timed_audit(ws, True, tmp / f"inc-{share}")
                row[f"incremental_{int(share * 100)}pct_s"] = round(inc_s, 2)
                row[f"incremental_{int(share * 100)}pct_events"] = extra
                assert inc["report"]["scope"]["since"] > 0, (report_last(ws), full["ledger_seq"], ws.ledger.head().size)
            failing = [c["id"] for c in full["report"]["controls"] if c["status"] == "fail"]
            row["failing_controls"] = failing
            results["runs"].append(row)
            print(
                f"{row['events']:>9,} events, {args.subjects:,} subjects: full audit {full_s:.1f} s "
                f"(ledger verification alone {verify_s:.1f} s), incremental after +1 % {row['incremental_1pct_s']} s, "
                f"+10 % {row['incremental_10pct_s']} s; failing: {failing or 'none'}",
                flush=True,
            )
            ws.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    results["generated_at"] = utc_iso(datetime.now(UTC))
    write_results(OUT, results)
    print(f"results: {OUT}")


if __name__ == "__main__":
    main()
