"""`complai audit`: run the compliance controls and write the report; `complai audit verify REPORT`."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from complai.cli.common import ForceOpt, console, open_session, print_json, table
from complai.cli.options import AuditFormatOpt, AuditOutOpt, EpsilonCapOpt, ReportArg, SinceLastOpt
from complai.errors import InvalidInput

app = typer.Typer(help="Compliance audits against the workspace and its ledger.", invoke_without_command=True)


@app.callback()
def audit(
    ctx: typer.Context,
    out: AuditOutOpt = Path("audit-report"),
    format_: AuditFormatOpt = "json,md,html",
    epsilon_cap: EpsilonCapOpt = 10.0,
    since_last: SinceLastOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    force: ForceOpt = False,
) -> None:
    """Run every control; exit 0 when none fails (warnings included), 1 when any does."""
    if ctx.invoked_subcommand is not None:
        return
    failed = _audit_once(out, format_, epsilon_cap, since_last, json_out, force)
    if failed:
        raise typer.Exit(1)


def _audit_once(
    out: Path, format_: str, epsilon_cap: float, since_last: bool, json_out: bool, force: bool = False
) -> int:
    formats = tuple(f.strip() for f in format_.split(",") if f.strip())
    with open_session("audit") as (_, session):
        result = session.compliance_audit(out, formats, epsilon_cap, since_last=since_last, force=force)
    doc = result.pop("report")
    if json_out:
        print_json({**result, "controls": [{k: c[k] for k in ("id", "status", "summary")} for c in doc["controls"]]})
    else:
        t = table("control", "status", "summary")
        for c in doc["controls"]:
            style = {"pass": "green", "fail": "red", "warning": "yellow"}.get(c["status"], "dim")
            t.add_row(c["id"], f"[{style}]{c['status']}[/]", c["summary"])
        console.print(t)
        for c in doc["controls"]:  # what to do about each warning's items (a failure's is in the report)
            if c["status"] == "warning":
                for item in c["items"]:
                    line = f"{c['id']} warning ({item['item']}): {item['problem']}. {item.get('advice', '')}"
                    console.print(line.strip(), markup=False, highlight=False)
        s = result["summary"]
        console.print(
            f"{s['fail']} fail, {s.get('warning', 0)} warning, {s['pass']} pass, {s['not applicable']} not "
            f"applicable, {s['not evaluated']} not evaluated; report {', '.join(result['files'].values())} "
            f"(digest in ledger entry {result['ledger_seq']})"
        )
    return int(result["summary"]["fail"])  # a warning (missing evidence, with its command) does not fail


@app.command("run")
def run(
    every: Annotated[str, typer.Option("--every", help="ISO-8601 period between audits, e.g. P1D or PT6H.")],
    out: Annotated[Path, typer.Option("--out", help="Folder; each audit writes a timestamped subfolder.")] = Path(
        "audit-reports"
    ),
    format_: AuditFormatOpt = "json,md,html",
    count: Annotated[
        int, typer.Option("--count", min=0, help="Stop after this many audits (0: run until stopped).")
    ] = 0,
    full: Annotated[
        bool, typer.Option("--full", help="Every audit in full (default: incremental after the first).")
    ] = False,
) -> None:
    """Audit on a schedule in the foreground; each audit is recorded in the ledger. For cron instead:
    `0 2 * * * complai --workspace /srv/ws audit --since-last --out /srv/audits/$(date +%F)`."""
    m = re.fullmatch(
        r"P(?:(\d{1,9})W)?(?:(\d{1,9})D)?(?:T(?:(\d{1,9})H)?(?:(\d{1,9})M)?(?:(\d{1,9})S)?)?", every.strip()
    )
    if not m or not any(m.groups()):
        raise InvalidInput(f"--every {every!r} is not an ISO-8601 period such as P1D or PT6H")
    w, d, h, mi, sec = (int(g) if g else 0 for g in m.groups())
    seconds = (((w * 7 + d) * 24 + h) * 60 + mi) * 60 + sec
    if seconds < 1:
        raise InvalidInput("--every must be at least one second")
    if seconds > 366 * 86400:
        raise InvalidInput(f"--every {every!r} is longer than a year")
    done = 0
    try:
        while True:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            failed = _audit_once(out / stamp, format_, 10.0, since_last=not full and done > 0, json_out=False)
            done += 1
            console.print(f"audit {done} written to {out / stamp} ({failed} failing controls)")
            if count and done >= count:
                return
            time.sleep(seconds)
    except KeyboardInterrupt:
        console.print(f"stopped after {done} audits")


@app.command("verify")
def verify(
    report: ReportArg,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check a report against the ledger: unchanged, recorded, and the ledger sound (exit 1 if not)."""
    with open_session("audit") as (_, session):
        result = session.verify_report(report)
    if json_out:
        print_json(result)
    else:
        console.print(f"report verified: {result['digest']} recorded at ledger entry {result['ledger_seq']}")
