"""Remote forms (`complai --server URL`) of the data commands: datasets (show, governed read, ingest by
upload), privacy budgets and models. Each answers as its local form does, from what the API answers;
nothing here opens a workspace (see cli/remote.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from complai.cli.options import (
    BudgetDatasetArg,
    CardFormatOpt,
    CardJsonOpt,
    CollectionPurposeOpt,
    ConsentsOpt,
    DataFormatOpt,
    DatasetAlterNameArg,
    DatasetAlterSchemaOpt,
    DatasetCreateNameArg,
    DatasetDropNameArg,
    DatasetShowNameArg,
    DelimiterOpt,
    DryRunOpt,
    EncodingOpt,
    IngestDataArg,
    IngestModeOpt,
    IngestNameArg,
    MapOpt,
    PrincipalOpt,
    SchemaOpt,
    SeedOpt,
    SetOpt,
    ShadowsOpt,
    SpecFileArg,
    SubjectColumnOpt,
    TrainPurposeOpt,
    YesOpt,
    print_audit_report,
    print_budgets,
    print_card_summary,
    print_dataset,
    print_models,
)
from complai.cli.output import print_json, table
from complai.cli.remote import (
    ForceOpt,
    JsonOpt,
    RemoteGroup,
    dataset_app,
    dp_app,
    output_path,
    remote,
    segment,
    write_file,
)
from complai.cli.state import console
from complai.errors import InvalidInput

__all__ = ["dataset_app", "dp_app", "model_app", "train"]

MODES = ("insert", "append", "upsert", "replace")
FORMATS = ("csv", "jsonl", "parquet")
READ_PAGE = 5000  # rows a page of a governed read (the API takes 1 to 10,000); each page is one recorded read


# --- datasets --------------------------------------------------------------------------------------


@dataset_app.command("show")
def dataset_show(name: DatasetShowNameArg, json_out: JsonOpt = False) -> None:
    """A dataset's schema (and, for those who may see exact data, its record and subject counts)."""
    with remote() as r:
        doc = r.call("GET", f"/datasets/{segment(name)}")
    if doc.get("records") is None:
        doc = {k: v for k, v in doc.items() if k not in ("records", "subjects")}  # as the local form omits them
    print_dataset(name, doc, json_out)


def schema_text(schema: Path) -> tuple[str, dict[str, Any]]:
    """A schema file's text and what it declares, read as the local forms read it."""
    from complai.inputs import parse_yaml, read_text_input  # heavy: pandas; the local forms' checks of a file

    text = read_text_input(schema, "schema")
    doc = parse_yaml(text, f"schema {schema}")
    if not isinstance(doc, dict):
        raise InvalidInput(f"schema {schema} must be a mapping")
    return text, doc


@dataset_app.command("create")
def dataset_create(
    name: DatasetCreateNameArg,
    schema: SchemaOpt,
    json_out: JsonOpt = False,
) -> None:
    """Register a dataset from a schema file."""
    text, declared = schema_text(schema)
    if declared.get("name") != name:
        raise InvalidInput(f"the schema names dataset {declared.get('name')!r}, not {name!r}")
    with remote() as r:
        doc = r.call("POST", "/datasets", json={"yaml": text})
    if json_out:
        print_json({"dataset": name, "fields": len(doc["fields"]), "purposes": doc["purposes"]})
    else:
        console.print(
            f"dataset [bold]{escape(name)}[/] registered: {len(doc['fields'])} fields, purposes {list(doc['purposes'])}"
        )


@dataset_app.command("alter")
def dataset_alter(
    name: DatasetAlterNameArg,
    schema: DatasetAlterSchemaOpt,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Change a dataset's schema to a new version: prints what changed. A narrowing change is checked
    against every stored record and refused with the number of records that do not fit."""
    text, _ = schema_text(schema)
    with remote() as r:
        out = r.call("PUT", f"/datasets/{segment(name)}/schema", json={"yaml": text, "dry_run": dry_run})
    if json_out:
        print_json(out)
        return
    t = table("change", "what")
    for kind, items in out["changes"].items():
        for item in items:
            t.add_row(kind, item)
    console.print(t)
    for note in out["notes"]:
        console.print(f"note: {note}")
    if dry_run:
        console.print(
            f"dry run: [bold]{escape(name)}[/] would become schema version {out['version']} "
            f"({out['records_checked']:,} stored records checked); nothing changed"
        )
    else:
        console.print(
            f"dataset [bold]{escape(name)}[/] is now at schema version {out['version']} "
            f"({out['records_checked']:,} stored records checked; ledger entry {out['ledger_seq']})"
        )


@dataset_app.command("drop")
def dataset_drop(
    name: DatasetDropNameArg,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Drop a dataset on the server: delete every record, crypto-shred the subjects left without records in
    any other dataset; its name stays taken. Asks to type the name unless --yes."""
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInput(f"dropping {name} erases its records for good: pass --yes to confirm without a prompt")
        typed = typer.prompt(f"This erases every record of {name} for good. Type the dataset's name to confirm")
        if typed != name:
            raise InvalidInput("the name typed does not match; nothing was dropped")
    with remote() as r:
        out = r.call("DELETE", f"/datasets/{segment(name)}", params={"confirm": name})
    if json_out:
        print_json(out)
        return
    console.print(
        f"dataset [bold]{escape(name)}[/] dropped: {out['records_deleted']:,} records deleted; "
        f"{out['subjects_shredded']:,} subjects crypto-shredded ({out['keys_destroyed']:,} data keys destroyed); "
        f"{out['subjects_kept']:,} subjects keep their key for their records in other datasets "
        f"(ledger entry {out['ledger_seq']})"
    )


@dataset_app.command("read")
def dataset_read(
    name: Annotated[str, typer.Argument(help="The dataset to read.")],
    purpose: Annotated[str, typer.Option("--purpose", help="Why the records are read (a purpose of the dataset).")],
    columns: Annotated[
        str | None, typer.Option("--columns", help="Comma-separated columns to read (default: all the purpose sees).")
    ] = None,
    out_format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many rows.")] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many rows first.")] = 0,
    page_size: Annotated[
        int, typer.Option("--page-size", min=1, max=10_000, help="Rows a request (each page is one recorded read).")
    ] = READ_PAGE,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the records here, mode 0600 (default: stdout).")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """The records this purpose may see, de-identified as the dataset declares; every page read is one
    governed read, recorded on the server. CSV (text a spreadsheet would run as a formula is prefixed with
    an apostrophe) or JSON: the dataset, purpose, columns, rows, de-identification and the ledger entries."""
    if out_format not in ("csv", "json"):
        raise InvalidInput(f"--format must be csv or json, not {out_format!r}")
    if out is not None:
        output_path(out, force)
    params: dict[str, Any] = {"purpose": purpose, "format": out_format}
    if columns:
        params["columns"] = columns
    at, wanted = offset, limit
    csv_parts: list[str] = []
    header: str | None = None
    rows: list[dict[str, Any]] = []
    doc: dict[str, Any] = {}
    seqs: list[int] = []
    with remote() as r:
        while wanted is None or wanted > 0:
            size = page_size if wanted is None else min(page_size, wanted)
            page_params = {**params, "limit": size, "offset": at}
            resp = r.response("GET", f"/datasets/{segment(name)}/records", params=page_params)
            if out_format == "json":
                page = resp.json()
                doc = page
                rows.extend(page["rows"])
                seqs.append(int(page["ledger_seq"]))
                returned, more = int(page["returned"]), page.get("next_offset") is not None
            else:
                text = resp.text
                first, sep, body = text.partition("\n")
                if header is None:
                    header = first + sep
                elif first + sep != header:
                    raise InvalidInput("the server's pages of this read do not have the same columns")
                csv_parts.append(body)
                seqs.append(int(resp.headers.get("X-Complai-Ledger-Seq", "-1")))
                more = "X-Complai-Next-Offset" in resp.headers
                returned = int(resp.headers["X-Complai-Next-Offset"]) - at if more else -1
            if not more:
                break
            at += returned
            if wanted is not None:
                wanted -= returned
    if out_format == "json":
        result: str = (
            json.dumps(
                {
                    "dataset": name,
                    "purpose": purpose,
                    "columns": doc.get("columns", []),
                    "rows": rows,
                    "returned": len(rows),
                    "deidentification": doc.get("deidentification"),
                    "ledger_seqs": seqs,
                },
                indent=2,
                sort_keys=True,
                default=str,
            )
            + "\n"
        )
    else:
        result = (header or "") + "".join(csv_parts)
    if out is not None:
        write_file(out, result, force, say=True)
    else:
        console.file.write(result)


@dataset_app.command("ingest")
def dataset_ingest(
    name: IngestNameArg,
    data: IngestDataArg,
    subject_column: SubjectColumnOpt = None,
    consents: ConsentsOpt = None,
    purpose: CollectionPurposeOpt = "administration",
    mode: IngestModeOpt = "insert",
    data_format: DataFormatOpt = None,
    delimiter: DelimiterOpt = ",",
    encoding: EncodingOpt = "utf-8",
    mapping: MapOpt = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Print the ingest job's id and return (follow it with `job show`).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Upload a file's rows to be encrypted and stored by the server, as a job (all or nothing; every bad
    row is reported); waits for it with its progress unless --no-wait."""
    if mode not in MODES:
        raise InvalidInput(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if data_format is not None and data_format not in FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(FORMATS)}, not {data_format!r}")
    for path in (data, consents):
        if path is not None and not path.is_file():
            raise InvalidInput(f"{path} is not a file")
    fields: dict[str, str | list[str]] = {"mode": mode, "delimiter": delimiter, "encoding": encoding}
    if data_format is not None:
        fields["format"] = data_format
    if subject_column:
        fields["subject_column"] = subject_column
    if mapping:
        fields["map"] = list(mapping)
    with remote() as r, data.open("rb") as fh:
        files: list[tuple[str, Any]] = [("file", (data.name, fh, "application/octet-stream"))]
        extra = consents.open("rb") if consents is not None else None
        try:
            if extra is not None and consents is not None:
                files.append(("consents", (consents.name, extra, "text/csv")))
            job = r.call(
                "POST", f"/datasets/{segment(name)}/ingest", params={"purpose": purpose}, data=fields, files=files
            )
        finally:
            if extra is not None:
                extra.close()
        if no_wait:
            if json_out:
                print_json(job)
            else:
                console.file.write(job["id"] + "\n")
            return
        job = r.follow(job, f"ingesting {data.name}", quiet=json_out)
    result = dict(job["result"] or {})
    if "ledger_seq" in result:  # the local form's name for the ledger entry
        result["seq"] = result.pop("ledger_seq")
    if json_out:
        print_json(result)
        return
    changes = []
    if result.get("updated"):
        changes.append(f"{result['updated']:,} replaced stored records")
    if result.get("deleted"):
        changes.append(f"{result['deleted']:,} stored records deleted")
    if result.get("skipped_existing_rows"):
        changes.append(f"skipped {result['skipped_existing_rows']:,} rows whose record is stored already")
    if result.get("skipped_erased_rows"):
        changes.append(f"skipped {result['skipped_erased_rows']} rows of erased subjects")
    console.print(
        f"ingested {result['rows']:,} rows for {result['subjects']:,} subjects ({result['new_subjects']:,} new) "
        f"and {result['consents']:,} consent records into [bold]{escape(name)}[/] (mode {mode})"
        + ("; " + "; ".join(changes) if changes else "")
    )


# --- privacy budgets -------------------------------------------------------------------------------


@dp_app.command("budget")
def dp_budget(
    dataset: BudgetDatasetArg,
    set_: SetOpt = None,
    principal: PrincipalOpt = "*",
    json_out: JsonOpt = False,
) -> None:
    """Show a dataset's privacy budgets, or set one (admin)."""
    path = f"/datasets/{segment(dataset)}/budgets"
    with remote() as r:
        if set_ is not None:
            r.call("PUT", path, json={"epsilon": set_[0], "delta": set_[1], "principal": principal})
        rows = r.call("GET", path)
    print_budgets(dataset, rows, json_out)


# --- models ----------------------------------------------------------------------------------------

model_app = typer.Typer(
    cls=RemoteGroup, help="Trained models: list, cards, membership-inference audits.", no_args_is_help=True
)
ModelArg = Annotated[str, typer.Argument(help="The model's id (see `model list`).")]


@model_app.command("list")
def model_list(json_out: JsonOpt = False) -> None:
    """Every stored model, with its privacy parameters and whether an erasure flagged it."""
    with remote() as r:
        rows = r.pages("/models")
    print_models(rows, json_out)


def _warnings(card: dict[str, Any]) -> list[str]:
    from complai.dp.training import card_warnings  # heavy: pandas; what the local forms warn of

    return card_warnings(card)


def train(
    spec_file: SpecFileArg,
    purpose: TrainPurposeOpt = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Print the training job's id and return (follow it with `job show`).")
    ] = False,
    json_out: CardJsonOpt = False,
) -> None:
    """Train a model on the server with DP-SGD (or non-privately if the spec says private: false), as a
    job, and store its card there."""
    from complai.inputs import parse_yaml, read_text_input  # heavy: pandas; the spec read as the local form reads it

    spec = parse_yaml(read_text_input(spec_file, "training spec"), f"training spec {spec_file}")
    if not isinstance(spec, dict):
        raise InvalidInput(f"training spec {spec_file} must be a mapping")
    body: dict[str, Any] = {"spec": spec}
    if purpose is not None:
        body["purpose"] = purpose
    with remote() as r:
        job = r.call("POST", "/models/train", json=body)
        if no_wait:
            console.file.write(job["id"] + "\n")
            return
        card = r.follow(job, f"training on {spec.get('dataset')}", quiet=json_out)["result"]["card"]
    if json_out:
        print_json(card)
        return
    print_card_summary(card, _warnings(card))


@model_app.command("audit")
def model_audit(
    model_id: ModelArg,
    shadows: ShadowsOpt = 8,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Membership-inference audit (loss threshold and LiRA) on the server, as a job: AUC, TPR at low FPR,
    empirical epsilon."""
    with remote() as r:
        job = r.call("POST", f"/models/{segment(model_id)}/audit", json={"shadows": shadows, "seed": seed})
        report = r.follow(job, "shadow models", quiet=json_out)["result"]
    if json_out:
        print_json(report)
        return
    print_audit_report(model_id, report, "the report is kept on the server")


@model_app.command("show")
def model_show(model_id: ModelArg, json_out: JsonOpt = False) -> None:
    """A model's registry entry (digests, flag) and card summary."""
    with remote() as r:
        info = r.call("GET", f"/models/{segment(model_id)}")
    if json_out:
        print_json(info)
        return
    card = info.pop("card")
    for k, v in info.items():
        console.print(f"{k}: {v}")
    print_card_summary(card, _warnings(card))


@model_app.command("card")
def model_card(model_id: ModelArg, format_: CardFormatOpt = "md") -> None:
    """Print a model's card (Markdown or canonical JSON)."""
    if format_ not in ("md", "json"):
        raise InvalidInput("--format is md or json")
    with remote() as r:
        resp = r.response("GET", f"/models/{segment(model_id)}/card", params={"format": format_})
    if format_ == "json":
        print_json(resp.json())
    else:
        console.file.write(resp.text)
