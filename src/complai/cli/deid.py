"""`complai deid ...`: de-identification of tables and texts, in process or (Parquet) on Spark."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape

from complai.cli.common import ForceOpt, console, err_console, open_session, print_json, protected_paths
from complai.cli.common import table as folding_table
from complai.deid.operators import Change
from complai.deid.scanner import draft_fields, draft_schema_yaml, scan
from complai.deid.tabular import Report
from complai.errors import InvalidInput
from complai.files import check_output, write_private
from complai.inputs import TABLE_MAX_BYTES, parse_yaml, read_table, read_text_input
from complai.vault.schema import DatasetSchema, FieldSpec

app = typer.Typer(help="De-identification: k-anonymity, l-diversity, t-closeness.", no_args_is_help=True)


def _cols(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _hierarchies(specs: list[str] | None) -> dict[str, dict[str, list[str]]] | None:
    if not specs:
        return None
    out = {}
    for spec in specs:
        if "=" not in spec:
            raise InvalidInput(f"--hierarchy takes COL=FILE.yaml, got {spec!r}")
        col, file = spec.split("=", 1)
        tree = parse_yaml(read_text_input(file, "hierarchy file"), f"hierarchy file {file}")
        if not isinstance(tree, dict) or not all(isinstance(v, list) for v in tree.values()):
            raise InvalidInput(f"hierarchy file {file} must map each value to a list of its ancestors")
        out[col.strip()] = {str(k): [str(x) for x in v] for k, v in tree.items()}
    return out


@app.command("table")
def table(
    source: Annotated[Path, typer.Argument(help="CSV file with a header row.")],
    quasi: Annotated[str, typer.Option("--quasi", help="Comma-separated quasi-identifiers.")],
    k: Annotated[int, typer.Option("--k", min=1, help="Each output row shares its quasi-identifiers with k-1 others.")],
    out: Annotated[Path, typer.Option("--out", help="De-identified CSV to write.")],
    sensitive: Annotated[str | None, typer.Option("--sensitive", help="Sensitive attribute (for l and t).")] = None,
    l_div: Annotated[int | None, typer.Option("--l", min=1, help="l-diversity of the sensitive attribute.")] = None,
    entropy: Annotated[bool, typer.Option("--entropy", help="Entropy l-diversity instead of distinct.")] = False,
    t: Annotated[float | None, typer.Option("--t", help="t-closeness (earth mover's distance).")] = None,
    numeric: Annotated[
        str | None, typer.Option("--numeric", help="Columns to generalise as ranges (default: numeric ones).")
    ] = None,
    suppress: Annotated[float, typer.Option("--suppress", help="Most rows (fraction) to suppress as outliers.")] = 0.0,
    hierarchy: Annotated[
        list[str] | None,
        typer.Option("--hierarchy", help="COL=FILE.yaml: each value mapped to its ancestors (repeatable)."),
    ] = None,
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", help="Direct identifier column(s) to keep anyway (named in the report, warned)."),
    ] = None,
    direct: Annotated[
        str, typer.Option("--direct-identifiers", help="What to do with direct identifiers: drop or pseudonymize.")
    ] = "drop",
    schema_src: Annotated[
        str | None,
        typer.Option("--schema", help="Schema YAML file or dataset name declaring the columns' identifier kinds."),
    ] = None,
    report_file: Annotated[Path | None, typer.Option("--report", help="Write the JSON report here.")] = None,
    purpose: Annotated[
        str, typer.Option("--purpose", help="Why the data is processed (recorded; the policy must allow it).")
    ] = "analytics",
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    force: ForceOpt = False,
) -> None:
    """k-anonymise a CSV (Mondrian); one output row per input row, other columns kept."""

    protected = protected_paths()
    if report_file and os.path.realpath(report_file) == os.path.realpath(out):
        raise InvalidInput(f"--out and --report name the same file ({out}); give each its own")
    check_output(out, force=force, forbidden=protected)
    if report_file:
        check_output(report_file, force=force, forbidden=protected)
    frame = read_table(source, "input")
    with open_session(purpose) as (_, session):
        schema: DatasetSchema | str | None = schema_src
        if schema_src and Path(schema_src).is_file():
            schema = session.parse_schema(Path(schema_src))

        def deliver(table: pd.DataFrame, rep: Report) -> None:  # the files first: a failed write records nothing
            write_private(out, table.to_csv(index=False), force=force, forbidden=protected)
            if report_file:
                write_private(report_file, json.dumps(rep.as_dict(), indent=2) + "\n", force=force, forbidden=protected)

        new = [p for p in (out, report_file) if p is not None and not p.exists()]
        try:
            _, report = session.deidentify_table(
                frame,
                schema=schema,
                deliver=deliver,
                keep=[c for spec in keep or [] for c in _cols(spec) or []],
                direct_identifiers=direct,
                quasi=_cols(quasi) or [],
                k=k,
                sensitive=sensitive,
                l=l_div,
                l_kind="entropy" if entropy else "distinct",
                t=t,
                numeric=_cols(numeric),
                hierarchies=_hierarchies(hierarchy),
                suppress=suppress,
            )
        except BaseException:
            for p in new:  # written but not recorded: not left behind
                p.unlink(missing_ok=True)
            raise
    doc = report.as_dict()
    if json_out:
        print_json(doc)
    else:
        a = report.achieved
        console.print(
            f"wrote {out}: {report.rows:,} rows in {report.classes:,} classes; achieved k={a['k']}"
            + (f", l={a['l_distinct']} (entropy {a['l_entropy']:.2f}), t={a['t']:.3f}" if "t" in a else "")
            + f"; information loss {report.utility['information_loss']:.3f}"
        )
        ids = report.direct_identifiers
        for what in ("dropped", "pseudonymized"):
            if ids[what]:
                console.print(f"direct identifiers {what}: {', '.join(ids[what])}")
    for note in report.notes:
        if note.startswith("WARNING") and "kept by request" not in note:
            err_console.print("warning: " + note.removeprefix("WARNING: "))
    if report.direct_identifiers["kept"]:
        err_console.print(
            f"warning: direct identifiers kept by request: {', '.join(report.direct_identifiers['kept'])}; "
            "the output identifies people and is not anonymous"
        )


def _operators(spec: str | None) -> dict[str, str] | None:
    """ENTITY=operator pairs, comma-separated."""
    if not spec:
        return None
    out = {}
    for part in spec.split(","):
        if "=" not in part:
            raise InvalidInput(f"--per-entity takes ENTITY=operator pairs, got {part!r}")
        entity, op = part.split("=", 1)
        out[entity.strip().upper()] = op.strip()
    return out


OperatorOpt = Annotated[
    str, typer.Option("--operator", help="redact, replace, mask, hash, tokenize, date_shift, generalize")
]
PerEntityOpt = Annotated[
    str | None, typer.Option("--per-entity", help="Per entity, e.g. DATE_TIME=date_shift,PERSON=hash")
]
RegexOpt = Annotated[bool, typer.Option("--regex-only", help="Patterns only: no spaCy, no names, much faster.")]
SubjectOpt = Annotated[str, typer.Option("--subject", help="Subject whose secret offset date_shift uses.")]


@app.command("text")
def text_cmd(
    text: Annotated[str, typer.Argument(help="The text to de-identify.")],
    operator: OperatorOpt = "replace",
    per_entity: PerEntityOpt = None,
    regex_only: RegexOpt = False,
    subject: SubjectOpt = "",
    purpose: Annotated[
        str, typer.Option("--purpose", help="Why the data is processed (recorded; the policy must allow it).")
    ] = "analytics",
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Find personal data in TEXT and transform it."""
    with open_session(purpose) as (_, session):
        [(result, changes)] = session.deidentify_text([text], operator, _operators(per_entity), regex_only, subject)
    if json_out:
        print_json({"text": result, "findings": [c.__dict__ for c in changes]})
    else:
        console.file.write(result + "\n")


@app.command("file")
def file_cmd(
    source: Annotated[Path, typer.Argument(help="A UTF-8 text file; each line is a document.")],
    out: Annotated[Path, typer.Option("--out", help="The de-identified text file to write.")],
    operator: OperatorOpt = "replace",
    per_entity: PerEntityOpt = None,
    regex_only: RegexOpt = False,
    subject: SubjectOpt = "",
    purpose: Annotated[
        str, typer.Option("--purpose", help="Why the data is processed (recorded; the policy must allow it).")
    ] = "analytics",
    force: ForceOpt = False,
) -> None:
    """De-identify a text file line by line."""
    protected = protected_paths()
    check_output(out, force=force, forbidden=protected)
    lines = read_text_input(source, "input file", TABLE_MAX_BYTES).splitlines()
    with open_session(purpose) as (_, session):
        new = not out.exists()

        def deliver(results: list[tuple[str, list[Change]]]) -> None:  # the file first: a failed write records nothing
            write_private(out, "".join(r + "\n" for r, _ in results), force=force, forbidden=protected)

        try:
            results = session.deidentify_text(
                lines, operator, _operators(per_entity), regex_only, subject, deliver=deliver
            )
        except BaseException:
            if new:  # written but not recorded: not left behind
                out.unlink(missing_ok=True)
            raise
    found = sum(len(c) for _, c in results)
    console.print(f"wrote {out}: {len(lines):,} lines, {found:,} findings transformed")


@app.command("column")
def column_cmd(
    source: Annotated[Path, typer.Argument(help="A Parquet file or folder (as Spark writes it).")],
    column: Annotated[str, typer.Option("--column", help="The text (string) column to de-identify.")],
    out: Annotated[Path, typer.Option("--out", help="The new Parquet folder to write (0700, files 0600).")],
    operator: OperatorOpt = "replace",
    per_entity: PerEntityOpt = None,
    entities: Annotated[
        str | None, typer.Option("--entities", help="Comma-separated entity types to look for (default: all).")
    ] = None,
    regex_only: RegexOpt = False,
    purpose: Annotated[
        str, typer.Option("--purpose", help="Why the data is processed (recorded; the policy must allow it).")
    ] = "analytics",
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing output (a file or a Parquet folder).")
    ] = False,
) -> None:
    """De-identify a text column of a Parquet file or folder on Spark; every other column is kept."""
    with open_session(purpose) as (_, session):
        what = f"de-identifying column {escape(column)} of {escape(str(source))} on Spark..."
        err_console.print(what, soft_wrap=True)
        done = session.deidentify_text_column(
            source,
            column,
            out,
            default=operator,
            operators=_operators(per_entity),
            regex_only=regex_only,
            entities=[e.upper() for e in _cols(entities) or []] or None,
            force=force,
        )
    if json_out:
        print_json(done.as_dict())
    else:
        found = sum(done.findings.values())
        console.print(f"wrote {out}: {done.rows:,} rows, {found:,} findings transformed in column {column}")


@app.command("check")
def check_cmd(
    source: Annotated[Path, typer.Argument(help="A Parquet file or folder (as Spark writes it).")],
    quasi: Annotated[str, typer.Option("--quasi", help="Comma-separated quasi-identifiers.")],
    sensitive: Annotated[str | None, typer.Option("--sensitive", help="Sensitive attribute (for l and t).")] = None,
    ordered: Annotated[
        bool, typer.Option("--ordered", help="Measure t along the sensitive values' order (numbers, dates).")
    ] = False,
    k: Annotated[int | None, typer.Option("--k", min=1, help="Require every class to hold at least k rows.")] = None,
    l_div: Annotated[
        int | None, typer.Option("--l", min=1, help="Require at least l distinct sensitive values per class.")
    ] = None,
    entropy: Annotated[bool, typer.Option("--entropy", help="Entropy l-diversity instead of distinct.")] = False,
    t: Annotated[
        float | None, typer.Option("--t", min=0.0, max=1.0, help="Require t-closeness at most t (earth mover's).")
    ] = None,
    purpose: Annotated[
        str, typer.Option("--purpose", help="Why the data is processed (recorded; the policy must allow it).")
    ] = "analytics",
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Measure the k, l and t a Parquet table achieves as it is, on Spark; exit 1 if a threshold asked
    (--k, --l, --t) is not met."""
    with open_session(purpose) as (_, session):
        err_console.print(f"measuring {escape(str(source))} on Spark...", soft_wrap=True)
        check = session.check_anonymity(
            source,
            _cols(quasi) or [],
            sensitive,
            ordered=ordered,
            k=k,
            l=l_div,
            t=t,
            l_kind="entropy" if entropy else "distinct",
        )
    if json_out:
        print_json(check.as_dict())
    else:
        f = check.figures
        console.print(
            f"{f['rows']:,} rows in {f['classes']:,} classes: k={f['k']}"
            + (f", l={f['l_distinct']} (entropy {f['l_entropy']:.2f}), t={f['t']:.3f}" if "t" in f else "")
        )
        for name, ok in check.met.items():
            console.print(f"{name} {check.asked[name]}: {'met' if ok else 'NOT met'}")
    if not check.all_met:
        raise typer.Exit(1)


@app.command("detokenize")
def detokenize_cmd(
    text: Annotated[str, typer.Argument(help="Text with tokens from --operator tokenize.")],
    purpose: Annotated[
        str, typer.Option("--purpose", help="Why the data is processed (recorded; the policy must allow it).")
    ] = "subject_request",
) -> None:
    """Restore tokenised values (the policy must allow `detokenize`; recorded)."""
    with open_session(purpose) as (_, session):
        restored = session.detokenize(text)
    console.file.write(restored + "\n")


@app.command("scan")
def scan_cmd(
    source: Annotated[str, typer.Argument(help="A CSV file, or the name of a dataset in the workspace.")],
    purpose: Annotated[str | None, typer.Option("--purpose", help="For a dataset: the purpose to read it for.")] = None,
    sample: Annotated[int, typer.Option("--sample", min=1, help="Values sampled per column.")] = 200,
    regex_only: RegexOpt = False,
    schema_out: Annotated[
        Path | None,
        typer.Option(
            "--schema-out",
            help="Draft a dataset schema from the CSV into this YAML file (types, categories, identifier "
            "kinds, coarse bounds; purposes, jurisdiction, retention and subject column left to fill in).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="With --schema-out: the dataset's name (default: from the file).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output (the proposals).")] = False,
    force: ForceOpt = False,
) -> None:
    """Propose a taxonomy category and identifier flags for each column (to review); with --schema-out,
    draft a dataset schema from a CSV."""
    path = Path(source)
    declared: dict[str, FieldSpec] = {}
    if schema_out is not None:
        if not (path.suffix.lower() == ".csv" or path.exists()):
            raise InvalidInput("--schema-out drafts from a CSV file; a dataset already has its schema")
        check_output(schema_out, force=force, forbidden=protected_paths())
    elif name is not None:
        raise InvalidInput("--name names the drafted schema: give it with --schema-out")
    if path.suffix.lower() == ".csv" or path.exists():
        frame = read_table(path, "input")
    else:
        if not purpose:
            raise InvalidInput("scanning a dataset reads it: give --purpose")
        with open_session(purpose) as (_, session):
            schema = session.dataset_schema(source, "read")
            frame = session.read(source).head(sample * 5)
            declared = {f.name: f for f in schema.fields}
    proposals = scan(frame, sample=sample, regex_only=regex_only)
    if schema_out is not None:
        dataset = name or re.sub(r"[^a-z0-9_]+", "_", path.stem.lower()).strip("_") or "dataset"
        if not dataset[0].isalpha():
            dataset = "d_" + dataset
        text = draft_schema_yaml(dataset[:63], draft_fields(frame, proposals), path.name)
        write_private(schema_out, text, force=force, forbidden=protected_paths())
    rows = []
    for p in proposals:
        d = p.as_dict()
        f = declared.get(p.column)
        if f is not None:
            d["declared"] = {"category": f.category, "identifier": f.identifier, "sensitive": f.sensitive}
        rows.append(d)
    if json_out:
        print_json(rows)
        return
    if schema_out is not None:
        err_console.print(f"wrote {schema_out}: review it and fill in each FILL-IN before `complai dataset create`")
    t = folding_table("column", "category", "identifier", "sensitive", "evidence")
    for d in rows:
        t.add_row(
            d["column"],
            d["category"] or "?",
            d["identifier"] or "",
            "yes" if d["sensitive"] else "",
            "; ".join(d["evidence"]),
        )
    console.print(t)
