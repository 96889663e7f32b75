"""`complai external register|enrol|requests|verify`: datasets whose rows stay in the lake (Parquet, a
catalogue table), read through Spark and governed by the vault."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from complai.cli.common import ForceOpt, console, open_session, print_json, protected_paths
from complai.errors import InvalidInput
from complai.files import check_output
from complai.inputs import TABLE_MAX_BYTES, read_input

app = typer.Typer(
    help="External datasets: rows kept in the lake and read through Spark, governed by the vault.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DatasetArg = Annotated[str, typer.Argument(help="The external dataset's name.")]


def read_ids(path: Path) -> list[str]:
    """Subject ids from a text file, one a line (a blank line is refused, as an id with surrounding
    whitespace is: a lake id and an enrolled id must be the same bytes)."""
    try:
        text = read_input(path, "ids file", TABLE_MAX_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"ids file {path.name} is not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


@app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Dataset name (must match the schema's name).")],
    schema: Annotated[Path, typer.Option("--schema", help="Schema YAML file.")],
    location: Annotated[str, typer.Option("--location", help="Parquet file or directory (path or URI), or db.table.")],
    owner: Annotated[str, typer.Option("--owner", help="The system that owns the rows (it carries out erasures).")],
    owner_key: Annotated[
        Path, typer.Option("--owner-key", help="The owner system's X25519 public key (.pub from `share keygen`).")
    ],
    kind: Annotated[str, typer.Option("--kind", help="parquet or table.")] = "parquet",
    erasure_days: Annotated[int, typer.Option("--erasure-days", help="Days the owner has to erase.")] = 30,
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="A date/datetime field: rows older than retention are not read.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Register an external dataset: its schema checked against the source's physical types (Spark)."""
    key = read_input(owner_key, "owner key file").decode("utf-8", errors="replace").strip()
    if kind == "parquet" and ":/" not in location:  # a local path: Spark resolves it from its own directory
        location = str(Path(location).resolve())
    source: dict[str, Any] = {
        "kind": kind,
        "location": location,
        "owner": owner,
        "owner_key": key,
        "erasure_days": erasure_days,
        "time_column": time_column,
    }
    with open_session("administration") as (_, session):
        spec = session.parse_schema(schema)
        if spec.name != name:
            raise InvalidInput(f"the schema names dataset {spec.name!r}, not {name!r}")
        session.register_external(spec, source)
    if json_out:
        print_json({"dataset": name, "fields": len(spec.fields), "purposes": spec.purposes, "kind": kind})
    else:
        console.print(f"external dataset [bold]{name}[/] registered: {len(spec.fields)} fields, owner {owner}")


@app.command("enrol")
def enrol(
    dataset: DatasetArg,
    ids: Annotated[Path | None, typer.Option("--ids", help="Text file of subject ids, one a line.")] = None,
    from_source: Annotated[
        bool, typer.Option("--from-source", help="Enrol every distinct subject id the source holds now.")
    ] = False,
    consents: Annotated[Path | None, typer.Option("--consents", help="Consents CSV (as `dataset ingest`).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Enrol subjects in an external dataset (their identity, keys and consents kept by the vault)."""
    if (ids is None) == (not from_source):
        raise InvalidInput("give either --ids FILE or --from-source")
    wanted = read_ids(ids) if ids is not None else None
    with open_session("administration") as (_, session):
        if wanted is not None:
            got = session.enrol(dataset, wanted, consents)
        else:
            got = session.enrol_from_source(dataset, consents)
    out = {
        "dataset": got.dataset,
        "subjects": got.subjects,
        "new_subjects": got.new_subjects,
        "already_enrolled": got.already_enrolled,
        "skipped_erased": got.skipped_erased,
        "consents": got.consents,
        "ledger_seq": got.seq,
    }
    if json_out:
        print_json(out)
        return
    console.print(
        f"{got.subjects} subject(s) enrolled in {dataset} ({got.new_subjects} new, {got.already_enrolled} already, "
        f"{got.skipped_erased} erased skipped), {got.consents} consent(s)"
    )


@app.command("requests")
def requests(
    dataset: Annotated[str | None, typer.Argument(help="An external dataset (all when omitted).")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the open requests, sealed to the owner's key, here.")
    ] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """List erasure requests to owner systems (needs audit or admin on the workspace), or export a
    dataset's open ones sealed (--out; needs admin on the dataset, and is recorded)."""
    if out is not None:
        if dataset is None:
            raise InvalidInput("--out needs the DATASET whose requests to export")
        check_output(out, force=force, forbidden=protected_paths())
        with open_session("subject_request") as (_, session):
            n = session.export_erasure_requests(dataset, out, force=force)
        if json_out:
            print_json({"dataset": dataset, "requests": n, "out": str(out)})
        else:
            console.print(f"{n} sealed erasure request(s) for {dataset} written to {out}")
        return
    with open_session("audit") as (_, session):
        found = session.erasure_requests(dataset)
    rows = [
        {
            "id": r.id,
            "dataset": r.dataset,
            "subject": r.subject,
            "requested_at": r.requested_at.isoformat(),
            "due_at": r.due_at.isoformat(),
            "state": r.state,
            "exported": r.exported,
        }
        for r in found
    ]
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no erasure requests")
    for row in rows:
        console.print(f"{row['id']}  {row['dataset']}  {row['subject']}  due {row['due_at']}  {row['state']}")


@app.command("verify")
def verify(
    dataset: Annotated[
        str | None, typer.Argument(help="An external dataset (all with open requests when omitted).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Scan the sources for the rows of erased subjects (Spark); record what was found."""
    with open_session("audit") as (_, session):
        results = session.verify_external_erasures(dataset)
    if json_out:
        print_json(results)
        return
    if not results:
        console.print("no open erasure requests")
    for name, r in results.items():
        console.print(f"{name}: {r['requests']} request(s), {r['gone']} gone, {r['present']} still present")
