"""`complai audit`: run the compliance controls and write the report; `complai audit verify REPORT`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from complai.cli.common import console, open_session, print_json

app = typer.Typer(help="Compliance audits against the workspace and its ledger.", invoke_without_command=True)


@app.callback()
def audit(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for the report files.")] = Path("audit-report"),
    format_: Annotated[str, typer.Option("--format", help="Comma-separated: json, md, html.")] = "json,md,html",
    epsilon_cap: Annotated[float, typer.Option("--epsilon-cap", help="Largest epsilon a model may have.")] = 10.0,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run every control; exit 0 when none fails, 1 when any does."""
    if ctx.invoked_subcommand is not None:
        return
    formats = tuple(f.strip() for f in format_.split(",") if f.strip())
    with open_session("audit") as (_, session):
        result = session.compliance_audit(out, formats, epsilon_cap)
    doc = result.pop("report")
    if json_out:
        print_json({**result, "controls": [{k: c[k] for k in ("id", "status", "summary")} for c in doc["controls"]]})
    else:
        t = Table("control", "status", "summary")
        for c in doc["controls"]:
            style = {"pass": "green", "fail": "red"}.get(c["status"], "dim")
            t.add_row(c["id"], f"[{style}]{c['status']}[/]", c["summary"])
        console.print(t)
        s = result["summary"]
        console.print(
            f"{s['pass']} pass, {s['fail']} fail, {s['not applicable']} not applicable, {s['not evaluated']} not "
            f"evaluated; report {', '.join(result['files'].values())} (digest in ledger entry {result['ledger_seq']})"
        )
    if result["summary"]["fail"]:
        raise typer.Exit(1)


@app.command("verify")
def verify(
    report: Annotated[Path, typer.Argument(help="A report.json written by complai audit.")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check a report against the ledger: unchanged, recorded, and the ledger sound (exit 1 if not)."""
    from complai.compliance.report import verify as check

    with open_session("audit") as (ws, session):
        session.audit_access()
        result = check(ws, report)
    if json_out:
        print_json(result)
    else:
        console.print(f"report verified: {result['digest']} recorded at ledger entry {result['ledger_seq']}")
