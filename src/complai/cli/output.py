"""What commands print, local or remote: JSON never wrapped, tables that fold rather than cut, and the
dataset listing both `dataset list` forms share. Loads no front door (the remote CLI imports it)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from complai.cli.state import console


def print_json(obj: Any) -> None:
    console.file.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def table(*headers: str, **options: Any) -> Table:
    """A Rich table whose cells fold a long value (an id, a digest, a root) onto further lines instead of
    cutting it with an ellipsis, at any terminal width. Without headers, give the column count as
    `columns=N` (key/value tables)."""
    columns = options.pop("columns", 0)
    t = Table(**options)
    for header in headers or ("",) * columns:
        t.add_column(header, overflow="fold")
    return t


def print_datasets(rows: list[dict[str, Any]], json_out: bool) -> None:
    """`dataset list`: rows of dataset, records, subjects (None: not the caller's to see), purposes,
    retention and jurisdiction, as JSON or a table."""
    if json_out:
        print_json(rows)
        return
    t = table("dataset", "records", "subjects", "purposes", "retention", "jurisdiction")
    for row in rows:
        t.add_row(
            row["dataset"],
            "-" if row["records"] is None else f"{row['records']:,}",
            "-" if row["subjects"] is None else f"{row['subjects']:,}",
            ", ".join(row["purposes"]),
            str(row["retention"]),
            str(row["jurisdiction"]),
        )
    console.print(t)
