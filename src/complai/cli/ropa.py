"""`complai ropa`: records of processing activities (GDPR Art. 30) as JSON and CSV."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from complai.cli.common import console, open_session, print_json
from complai.errors import InvalidInput


def ropa(
    out: Annotated[Path | None, typer.Option("--out", help="Folder for ropa.json and ropa.csv.")] = None,
    format_: Annotated[str, typer.Option("--format", help="json, csv or both (comma-separated).")] = "json,csv",
    json_out: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """Generate the records of processing from the datasets' declarations and the sharing agreements."""
    from complai.compliance.ropa import records_of_processing, to_csv

    formats = {f.strip() for f in format_.split(",") if f.strip()}
    if not formats <= {"json", "csv"}:
        raise InvalidInput("--format takes json and/or csv")
    with open_session("audit") as (ws, session):
        session.audit_access()
        recs = records_of_processing(ws)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if "json" in formats:
            (out / "ropa.json").write_text(json.dumps(recs, indent=1))
        if "csv" in formats:
            (out / "ropa.csv").write_text(to_csv(recs))
    if json_out:
        print_json(recs)
    else:
        for r in recs:
            console.print(f"{r['dataset']} / {r['purpose']}: {r['lawful_basis']}; retention {r['retention']}")
