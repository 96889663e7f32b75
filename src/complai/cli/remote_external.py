"""Remote forms (`complai --server URL`) of `complai external register|enrol|requests|verify`: the same
options and the same output (`--json` included) as cli/external.py, from what /api/v1/external answers.
Paths the command names (schema, owner key, ids, consents, --out) are read and written here; the
source's location is the server's (its Spark reads it). Nothing here opens a workspace (see
cli/remote.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from complai.cli.options import (
    DatasetCreateNameArg,
    EnrolConsentsOpt,
    ErasureDaysOpt,
    ExternalDatasetArg,
    ExternalKindOpt,
    ExternalLocationOpt,
    ExternalOwnerKeyOpt,
    ExternalOwnerOpt,
    FromSourceOpt,
    IdsFileOpt,
    RequestsDatasetArg,
    RequestsOutOpt,
    SchemaOpt,
    TimeColumnOpt,
    VerifyDatasetArg,
    print_enrolled,
    print_erasure_requests,
    print_exported_requests,
    print_registered,
    print_verified,
    read_ids,
)
from complai.cli.remote import ForceOpt, JsonOpt, RemoteGroup, output_path, remote, segment
from complai.cli.remote_data import schema_text
from complai.errors import InvalidInput

__all__ = ["external_app"]

external_app = typer.Typer(
    cls=RemoteGroup,
    help="External datasets: rows kept in the lake and read through Spark, governed by the vault.",
    no_args_is_help=True,
)


def _read_consents(path: Path) -> list[dict[str, str | None]]:
    """A consents CSV as the API's consent records: one object a row, an empty cell null (the local form
    reads it so)."""
    from complai.inputs import TABLE_MAX_BYTES, parse_csv, read_input  # heavy: pandas; strict CSV, as locally

    table = parse_csv(read_input(path, "consents file", TABLE_MAX_BYTES), "consents", path.name)
    return [{h: (v if v != "" else None) for h, v in zip(table.header, row, strict=True)} for row in table.rows]


@external_app.command("register")
def register(
    name: DatasetCreateNameArg,
    schema: SchemaOpt,
    location: ExternalLocationOpt,
    owner: ExternalOwnerOpt,
    owner_key: ExternalOwnerKeyOpt,
    kind: ExternalKindOpt = "parquet",
    erasure_days: ErasureDaysOpt = 30,
    time_column: TimeColumnOpt = None,
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
    print_registered(name, len(doc["fields"]), doc["purposes"], kind, owner, json_out)


@external_app.command("enrol")
def enrol(
    dataset: ExternalDatasetArg,
    ids: IdsFileOpt = None,
    from_source: FromSourceOpt = False,
    consents: EnrolConsentsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enrol subjects in an external dataset (their identity, keys and consents kept by the vault)."""
    if (ids is None) == (not from_source):
        raise InvalidInput("give either --ids FILE or --from-source")
    wanted = read_ids(ids) if ids is not None else None
    records = _read_consents(consents) if consents is not None else None
    path = f"/external/datasets/{segment(dataset)}/enrolments"
    with remote() as r:
        if wanted is not None:
            got = r.call("POST", path, json={"ids": wanted, "consents": records})
        else:
            job = r.call("POST", path + "/from-source", json={"consents": records})
            got = r.follow(job, f"enrolling {dataset} from its source", quiet=json_out)["result"]
    print_enrolled(dataset, got, json_out)


def _local_time(text: str) -> str:
    """A time the API answers (RFC 3339, Z) as the local form prints it (Python's isoformat)."""
    return datetime.fromisoformat(text).isoformat()


@external_app.command("requests")
def requests(
    dataset: RequestsDatasetArg = None,
    out: RequestsOutOpt = None,
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
        print_exported_requests(dataset, n, out, json_out)
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
    print_erasure_requests(rows, json_out)


@external_app.command("verify")
def verify(
    dataset: VerifyDatasetArg = None,
    json_out: JsonOpt = False,
) -> None:
    """Scan the sources for the rows of erased subjects (Spark); record what was found."""
    with remote() as r:
        job = r.call("POST", "/external/verify", json={"dataset": dataset})
        results: dict[str, dict[str, int]] = r.follow(job, "scanning the sources", quiet=json_out)["result"]["datasets"]
    print_verified(results, json_out)
