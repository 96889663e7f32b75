"""`complai deid ...`: de-identification of tables (text follows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from complai.cli.common import console, open_session, print_json
from complai.errors import InvalidInput

app = typer.Typer(help="De-identification: k-anonymity, l-diversity, t-closeness.", no_args_is_help=True)


def _cols(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


@app.command("table")
def table(
    source: Annotated[Path, typer.Argument(help="CSV file with a header row.")],
    quasi: Annotated[str, typer.Option("--quasi", help="Comma-separated quasi-identifiers.")],
    k: Annotated[int, typer.Option("--k", min=1)],
    out: Annotated[Path, typer.Option("--out", help="De-identified CSV to write.")],
    sensitive: Annotated[str | None, typer.Option("--sensitive", help="Sensitive attribute (for l and t).")] = None,
    l_div: Annotated[int | None, typer.Option("--l", min=1, help="l-diversity of the sensitive attribute.")] = None,
    entropy: Annotated[bool, typer.Option("--entropy", help="Entropy l-diversity instead of distinct.")] = False,
    t: Annotated[float | None, typer.Option("--t", help="t-closeness (earth mover's distance).")] = None,
    numeric: Annotated[
        str | None, typer.Option("--numeric", help="Columns to generalise as ranges (default: numeric ones).")
    ] = None,
    suppress: Annotated[float, typer.Option("--suppress", help="Most rows (fraction) to suppress as outliers.")] = 0.0,
    report_file: Annotated[Path | None, typer.Option("--report", help="Write the JSON report here.")] = None,
    purpose: Annotated[str, typer.Option("--purpose")] = "analytics",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """k-anonymise a CSV (Mondrian); one output row per input row, other columns kept."""
    import pandas as pd

    try:
        frame = pd.read_csv(source, skipinitialspace=True)
    except FileNotFoundError:
        raise InvalidInput(f"{source} not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{source.name} is not valid CSV ({str(exc).splitlines()[0]})") from None
    with open_session(purpose) as (_, session):
        result, report = session.deidentify_table(
            frame,
            quasi=_cols(quasi) or [],
            k=k,
            sensitive=sensitive,
            l=l_div,
            l_kind="entropy" if entropy else "distinct",
            t=t,
            numeric=_cols(numeric),
            suppress=suppress,
        )
    result.to_csv(out, index=False)
    doc = report.as_dict()
    if report_file:
        report_file.write_text(json.dumps(doc, indent=2) + "\n")
    if json_out:
        print_json(doc)
    else:
        a = report.achieved
        console.print(
            f"wrote {out}: {report.rows:,} rows in {report.classes:,} classes; achieved k={a['k']}"
            + (f", l={a['l_distinct']} (entropy {a['l_entropy']:.2f}), t={a['t']:.3f}" if "t" in a else "")
            + f"; information loss {report.utility['information_loss']:.3f}"
        )
