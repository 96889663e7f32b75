"""`complai request ...`: the data subject request register."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from complai.cli.common import ForceOpt, open_session, protected_paths
from complai.cli.options import (
    ChangeOpt,
    ExtendReasonOpt,
    FulfilOutOpt,
    FulfilPurposeOpt,
    FulfilSubjectOpt,
    MethodOpt,
    OverdueOpt,
    RejectReasonOpt,
    RequestJurisdictionOpt,
    RequestSubjectOpt,
    RequestTypeOpt,
    RidArg,
    print_request,
    print_requests,
)
from complai.errors import InvalidInput
from complai.files import check_output, write_private

app = typer.Typer(help="Data subject requests: deadlines, verification, fulfilment.", no_args_is_help=True)


@app.command("open")
def open_(
    type_: RequestTypeOpt,
    subject: RequestSubjectOpt,
    jurisdiction: RequestJurisdictionOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Register a request; its deadline follows from the jurisdiction."""
    with open_session("subject_request") as (_, session):
        print_request(session.request_open(type_, subject, jurisdiction).value, json_out)


@app.command("list")
def list_(
    overdue: OverdueOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List requests with their deadlines and days left."""
    with open_session("audit") as (_, session):
        rows = session.requests(overdue)
    print_requests(rows, json_out)


@app.command("show")
def show(
    rid: RidArg, json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False
) -> None:
    """Show a request: its status, deadlines, verification and fulfilment steps, and whether it came
    through the portal (with what was asked there)."""
    with open_session("audit") as (_, session):
        found = session.request(rid)
        print_request({**found, "portal": session.portal_summary(rid)}, json_out)


@app.command("verify")
def verify(
    rid: RidArg,
    method: MethodOpt,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Record that the requester's identity was verified, and how."""
    with open_session("subject_request") as (_, session):
        print_request(session.request_verify(rid, method).value, json_out)


@app.command("acknowledge")
def acknowledge(
    rid: RidArg, json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False
) -> None:
    """Record that the subject was told the request was received."""
    with open_session("subject_request") as (_, session):
        print_request(session.request_acknowledge(rid).value, json_out)


@app.command("extend")
def extend(
    rid: RidArg,
    reason: ExtendReasonOpt,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Extend the deadline where the law allows it, with the reason given to the subject."""
    with open_session("subject_request") as (_, session):
        print_request(session.request_extend(rid, reason).value, json_out)


@app.command("reject")
def reject(
    rid: RidArg,
    reason: RejectReasonOpt,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Refuse a request, with the reason the subject is given."""
    with open_session("subject_request") as (_, session):
        print_request(session.request_reject(rid, reason).value, json_out)


@app.command("fulfil")
def fulfil(
    rid: RidArg,
    subject: FulfilSubjectOpt = None,
    out: FulfilOutOpt = None,
    purpose: FulfilPurposeOpt = None,
    change: ChangeOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    force: ForceOpt = False,
) -> None:
    """Carry the request out through the vault; each step's status is kept, failed steps can be retried.

    A request that came through the portal is carried out with the identifier verified there (never
    shown): give no --subject, --purpose or --out; its access or portability export is kept for the person
    to download from the portal."""
    protected = protected_paths()
    if out is not None:
        check_output(out, force=force, forbidden=protected)
    changes = []
    for c in change or []:
        key, sep, value = c.partition("=")
        dataset, dot, field = key.partition(".")
        if not (sep and dot and dataset and field):
            raise InvalidInput(f"--change {c!r}: expected DATASET.FIELD=VALUE")
        changes.append((dataset, field, value))
    with open_session("subject_request") as (_, session):
        req = session.request(rid)
        if session.portal_summary(rid) is not None:
            if subject is not None or purpose is not None or out is not None:
                raise InvalidInput(
                    f"request {rid} came through the portal: the identifier and purpose verified there are used "
                    "and the export is kept for the person there; give no --subject, --purpose or --out"
                )
            result, output = session.portal_fulfil(rid, changes=changes), None
        else:
            if subject is None:
                raise InvalidInput("--subject is required for a request that did not come through the portal")
            if req["type"] in ("access", "portability") and out is None:
                raise InvalidInput("an access or portability request needs --out FILE for the export")
            result, output = session.request_fulfil(rid, subject, purpose=purpose, changes=changes)
    if output is not None and out is not None:
        write_private(out, json.dumps(output, indent=1, default=str), force=force, forbidden=protected)
    print_request(result.value, json_out)
