"""Options, arguments and printers that a command's local form and its remote form (`complai --server`)
share, declared once so that both forms take and print the same. Loads no front door: only typer,
rich and the CLI's output and state modules (the remote CLI imports it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from complai.cli.output import print_json, table
from complai.cli.state import console

# --- dataset ingest ------------------------------------------------------------------------------

IngestNameArg = Annotated[str, typer.Argument(help="Dataset name.")]
IngestDataArg = Annotated[Path, typer.Argument(help="Data file: CSV with a header row, JSON Lines or Parquet.")]
SubjectColumnOpt = Annotated[
    str | None, typer.Option("--subject-column", help="Column holding the subject id (default: the schema's).")
]
ConsentsOpt = Annotated[Path | None, typer.Option("--consents", help="Consents CSV (subject, purpose, ...).")]
CollectionPurposeOpt = Annotated[str, typer.Option("--purpose", help="Purpose of the collection.")]
IngestModeOpt = Annotated[
    str,
    typer.Option(
        "--mode",
        help="What becomes of rows whose record is stored already (by the schema's record_key, or subject and "
        "values): insert refuses them (nothing is stored), append skips them, upsert replaces those records "
        "(needs a record_key), replace deletes the dataset's records and stores the file's.",
    ),
]
DataFormatOpt = Annotated[
    str | None, typer.Option("--format", help="csv, jsonl or parquet (default: by the file's extension).")
]
DelimiterOpt = Annotated[str, typer.Option("--delimiter", help="CSV field delimiter (one character; \\t for tab).")]
EncodingOpt = Annotated[
    str, typer.Option("--encoding", help="Text encoding of a CSV or JSON Lines file (e.g. latin-1).")
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option("--map", help="Rename a column of the file to a schema field: source=field (repeatable)."),
]

# --- models --------------------------------------------------------------------------------------


def print_models(rows: list[dict[str, Any]], json_out: bool) -> None:
    """`model list`: every stored model with its privacy parameters and any erasure flag."""
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no models")
        return
    t = table("model", "dataset", "architecture", "epsilon", "delta", "subjects", "created", "flag")
    for m in rows:
        t.add_row(
            m["model_id"],
            m["dataset"],
            m["architecture"],
            "not private" if not m["private"] else f"{m['epsilon']:.3g}",
            "" if m["delta"] is None else f"{m['delta']:.1e}",
            f"{m['subjects']:,}",
            m["created_at"],
            m["flag_reason"] or "",
        )
    console.print(t)


def print_card_summary(card: dict[str, Any], warnings: list[str]) -> None:
    """A model card in two lines (privacy; held-out evaluation and subjects), then each of `warnings`
    (the card's, from complai.dp.training.card_warnings, which this light module cannot import)."""
    p, u = card["privacy"], card["utility"]
    privacy = (
        f"epsilon {p['epsilon']:.3g} at delta {p['delta']:.1e} ({p['accountant']}; noise {p['noise_multiplier']:.3g}, "
        f"q {p['sample_rate']:.3g}, {p['steps']} steps, clip {p['max_grad_norm']:g})"
        if p["private"]
        else "not private"
    )
    console.print(f"model {card['model_id']} ({card['name']}): {privacy}")
    d = card["data"]
    # a private run's card states no count of subjects (its privacy.size_bound is the public bound), and
    # its held-out evaluation only to principals who may read the dataset
    subjects = (
        f"{d['training_subjects']:,} training subjects"
        if "training_subjects" in d
        else f"subjects at most {p['size_bound']:,} (no exact count on a private card)"
        if "size_bound" in p
        else "no count of subjects"
    )
    if "accuracy" in u:
        held_out = f"held-out accuracy {u['accuracy']:.4f} (majority class {u['majority_accuracy']:.4f})" + (
            f", AUC {u['auc']:.4f}" if u.get("auc") is not None else ""
        )
    else:
        held_out = "held-out evaluation withheld (for principals who may read the dataset)"
    console.print(f"  {held_out}; {subjects}")
    for w in warnings:
        console.print(Text(f"WARNING: {w}", style="bold red"))
