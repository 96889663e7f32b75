"""`complai external register|enrol|requests|verify`: datasets whose rows stay in the lake (Parquet, a
catalogue table), read through Spark and governed by the vault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from complai.cli.common import ForceOpt, open_session, protected_paths
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
    JsonOpt,
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
from complai.errors import InvalidInput
from complai.files import check_output
from complai.inputs import read_input

app = typer.Typer(
    help="External datasets: rows kept in the lake and read through Spark, governed by the vault.",
    no_args_is_help=True,
)


@app.command("register")
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
    print_registered(name, len(spec.fields), list(spec.purposes), kind, owner, json_out)


@app.command("enrol")
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
    print_enrolled(dataset, out, json_out)


@app.command("requests")
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
        check_output(out, force=force, forbidden=protected_paths())
        with open_session("subject_request") as (_, session):
            n = session.export_erasure_requests(dataset, out, force=force)
        print_exported_requests(dataset, n, out, json_out)
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
    print_erasure_requests(rows, json_out)


@app.command("verify")
def verify(
    dataset: VerifyDatasetArg = None,
    json_out: JsonOpt = False,
) -> None:
    """Scan the sources for the rows of erased subjects (Spark); record what was found."""
    with open_session("audit") as (_, session):
        results = session.verify_external_erasures(dataset)
    print_verified(results, json_out)
