"""Remote forms (`complai --server URL`) of `complai external register|enrol|requests|verify`: the same
options and the same output (`--json` included) as cli/external.py, from what /api/v1/external answers.
Paths the command names (schema, owner key, ids, consents, --out) are read and written here; the
source's location is the server's (its Spark reads it). Nothing here opens a workspace (see
cli/remote.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from complai.cli.output import print_json
from complai.cli.remote import ForceOpt, JsonOpt, RemoteGroup, output_path, remote, segment
from complai.cli.remote_data import schema_text
from complai.cli.state import console
from complai.errors import InvalidInput

__all__ = ["external_app"]

external_app = typer.Typer(
    cls=RemoteGroup,
    help="External datasets: rows kept in the lake and read through Spark, governed by the vault.",
    no_args_is_help=True,
)

DatasetArg = Annotated[str, typer.Argument(help="The external dataset's name.")]
ConsentsFileOpt = Annotated[Path | None, typer.Option("--consents", help="Consents CSV (as `dataset ingest`).")]


def _read_ids(path: Path) -> list[str]:
    """Subject ids from a text file, one a line, as the local form reads them (a blank line or an id with
    surrounding whitespace is sent as it is, and the server refuses it)."""
    from complai.inputs import TABLE_MAX_BYTES, read_input  # heavy: pandas; the file read as the local form reads it

    try:
        text = read_input(path, "ids file", TABLE_MAX_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"ids file {path.name} is not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _read_consents(path: Path) -> list[dict[str, str | None]]:
    """A consents CSV as the API's consent records: one object a row, an empty cell null (the local form
    reads it so)."""
    from complai.inputs import TABLE_MAX_BYTES, parse_csv, read_input  # heavy: pandas; strict CSV, as locally

    table = parse_csv(read_input(path, "consents file", TABLE_MAX_BYTES), "consents", path.name)
    return [{h: (v if v != "" else None) for h, v in zip(table.header, row, strict=True)} for row in table.rows]


@external_app.command("register")
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
    from complai.inputs import read_input  # heavy: pandas; the key file read as the local form reads it

    key = read_input(owner_key, "owner key file").decode("utf-8", errors="replace").strip()
    if kind == "parquet" and ":/" not in location and not Path(location).is_absolute():
        # the local form resolves it from here; the server's Spark would resolve it from the server's folder
        raise InvalidInput(
            f"--location: with --server, give the absolute path (or URI) the server reads, not {location!r}"
        )
    text, declared = schema_text(schema)
    if declared.get("name") != name:
        raise InvalidInput(f"the schema names dataset {declared.get('name')!r}, not {name!r}")
    source = {
        "kind": kind,
        "location": location,
        "owner": owner,
        "owner_key": key,
        "erasure_days": erasure_days,
        "time_column": time_column,
    }
    with remote() as r:
        doc = r.call("POST", "/external/datasets", json={"yaml": text, "source": source})
    if json_out:
        print_json({"dataset": name, "fields": len(doc["fields"]), "purposes": doc["purposes"], "kind": kind})
    else:
        console.print(
            f"external dataset [bold]{escape(name)}[/] registered: {len(doc['fields'])} fields, owner {escape(owner)}"
        )


@external_app.command("enrol")
def enrol(
    dataset: DatasetArg,
    ids: Annotated[Path | None, typer.Option("--ids", help="Text file of subject ids, one a line.")] = None,
    from_source: Annotated[
        bool, typer.Option("--from-source", help="Enrol every distinct subject id the source holds now.")
    ] = False,
    consents: ConsentsFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enrol subjects in an external dataset (their identity, keys and consents kept by the vault)."""
    if (ids is None) == (not from_source):
        raise InvalidInput("give either --ids FILE or --from-source")
    wanted = _read_ids(ids) if ids is not None else None
    records = _read_consents(consents) if consents is not None else None
    path = f"/external/datasets/{segment(dataset)}/enrolments"
    with remote() as r:
        if wanted is not None:
            got = r.call("POST", path, json={"ids": wanted, "consents": records})
        else:
            job = r.call("POST", path + "/from-source", json={"consents": records})
            got = r.follow(job, f"enrolling {dataset} from its source", quiet=json_out)["result"]
    if json_out:
        print_json(got)
        return
    console.print(
        f"{got['subjects']} subject(s) enrolled in {escape(dataset)} ({got['new_subjects']} new, "
        f"{got['already_enrolled']} already, {got['skipped_erased']} erased skipped), {got['consents']} consent(s)"
    )


def _local_time(text: str) -> str:
    """A time the API answers (RFC 3339, Z) as the local form prints it (Python's isoformat)."""
    return datetime.fromisoformat(text).isoformat()


@external_app.command("requests")
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
        output_path(out, force)
        with remote() as r:
            answer = r.download("POST", f"/external/datasets/{segment(dataset)}/requests/export", out, force)
        n = int(answer.headers.get("x-complai-requests", "0"))
        if json_out:
            print_json({"dataset": dataset, "requests": n, "out": str(out)})
        else:
            console.print(f"{n} sealed erasure request(s) for {escape(dataset)} written to {escape(str(out))}")
        return
    with remote() as r:
        found = r.pages("/external/requests", {"dataset": dataset} if dataset is not None else None)
    rows: list[dict[str, Any]] = [
        {
            "id": f["id"],
            "dataset": f["dataset"],
            "subject": f["subject"],
            "requested_at": _local_time(f["requested_at"]),
            "due_at": _local_time(f["due_at"]),
            "state": f["state"],
            "exported": f["exported"],
        }
        for f in found
    ]
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no erasure requests")
    for row in rows:
        console.print(escape(f"{row['id']}  {row['dataset']}  {row['subject']}  due {row['due_at']}  {row['state']}"))


@external_app.command("verify")
def verify(
    dataset: Annotated[
        str | None, typer.Argument(help="An external dataset (all with open requests when omitted).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Scan the sources for the rows of erased subjects (Spark); record what was found."""
    with remote() as r:
        job = r.call("POST", "/external/verify", json={"dataset": dataset})
        results: dict[str, dict[str, int]] = r.follow(job, "scanning the sources", quiet=json_out)["result"]["datasets"]
    if json_out:
        print_json(results)
        return
    if not results:
        console.print("no open erasure requests")
    for name, got in results.items():
        console.print(
            f"{escape(name)}: {got['requests']} request(s), {got['gone']} gone, {got['present']} still present"
        )
