"""Remote forms (`complai --server URL`) of the officers' and auditors' commands: the ledger (entries,
proofs, checkpoints, verification), audits, subject requests, incidents, DPIAs, records of processing,
principals and tokens. Each answers as its local form does, from what the API answers; nothing here
opens a workspace (see cli/remote.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from complai.cli.options import (
    AuditFormatOpt,
    AuditOutOpt,
    AuthorityOpt,
    ByOpt,
    ChangeOpt,
    DescriptionOpt,
    DpiaDatasetArg,
    DurationArg,
    EpsilonCapOpt,
    EveryoneOpt,
    ExtendReasonOpt,
    FulfilOutOpt,
    FulfilPurposeOpt,
    FulfilSubjectOpt,
    GenerateOutOpt,
    IncidentArg,
    MethodOpt,
    OverdueOpt,
    PrincipalDisableNameArg,
    RejectReasonOpt,
    ReportArg,
    RequestJurisdictionOpt,
    RequestSubjectOpt,
    RequestTypeOpt,
    RidArg,
    RopaFormatOpt,
    RopaJsonOutOpt,
    RopaOutOpt,
    SinceLastOpt,
    TokenCreatePrincipalOpt,
    TokenExpiresOpt,
    TokenIdArg,
    TokenListPrincipalOpt,
    VersionOpt,
    print_incident,
    print_incidents,
    print_request,
    print_requests,
)
from complai.cli.output import print_json, table
from complai.cli.remote import (
    ForceOpt,
    JsonOpt,
    RemoteError,
    RemoteGroup,
    ledger_app,
    output_path,
    protected,
    remote,
    segment,
    write_file,
)
from complai.cli.state import console, err_console
from complai.errors import InvalidInput
from complai.files import check_outputs, output_dir

__all__ = [
    "audit_app",
    "dpia_app",
    "incident_app",
    "ledger_app",
    "principal_app",
    "request_app",
    "ropa",
    "token_app",
    "witness_app",
]

QuorumOpt = Annotated[int, typer.Option("--witnesses", min=0, help="Cosignatures required on the latest checkpoint.")]
MAX_SEQ = 2**62


def _bounded(value: int, what: str, lo: int = 0) -> int:
    if not lo <= value <= MAX_SEQ:
        raise InvalidInput(f"{what} must be between {lo} and {MAX_SEQ}, not {value}")
    return value


# --- ledger ----------------------------------------------------------------------------------------


@ledger_app.command("show")
def ledger_show(
    type_: Annotated[str | None, typer.Option("--type", help="Only entries of this event type.")] = None,
    start: Annotated[int, typer.Option("--from", help="First sequence number.")] = 0,
    limit: Annotated[int, typer.Option("--limit", help="At most this many entries.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """List ledger entries."""
    _bounded(start, "--from")
    _bounded(limit, "--limit", lo=1)
    entries: list[dict[str, Any]] = []
    with remote() as r:
        at: int | None = start
        while at is not None and len(entries) < limit:
            params: dict[str, Any] = {"start": at, "limit": min(500, limit - len(entries))}
            if type_:
                params["type"] = type_
            page = r.call("GET", "/ledger/entries", params=params)
            entries.extend(page["entries"])
            at = page.get("next")
    if json_out:
        print_json([{"seq": e["seq"], "type": e["type"], "event": e["event"]} for e in entries])
        return
    t = table("seq", "type", "time", "actor", "purpose", "details")
    for e in entries:
        ev = e["event"]
        details = {k: v for k, v in ev.items() if k not in ("type", "v", "time", "actor", "purpose")}
        t.add_row(
            str(e["seq"]),
            e["type"],
            ev.get("time", ""),
            ev.get("actor", ""),
            ev.get("purpose", ""),
            json.dumps(details, sort_keys=True)[:80],
        )
    console.print(t)


@ledger_app.command("prove")
def ledger_prove(
    seq: Annotated[int, typer.Argument(help="Sequence number of the entry.")],
    size: Annotated[int | None, typer.Option("--size", help="Tree size to prove against.")] = None,
) -> None:
    """Print a JSON inclusion proof for one entry, with the signed checkpoint it leads to."""
    _bounded(seq, "the sequence number")
    params = {"size": _bounded(size, "--size", lo=1)} if size is not None else {}
    with remote() as r:
        proof = r.call("GET", f"/ledger/entries/{seq}/proof", params=params)
    print_json(proof)


@ledger_app.command("checkpoint")
def ledger_checkpoint(json_out: JsonOpt = False) -> None:
    """Sign the current tree head as a checkpoint (C2SP signed note)."""
    with remote() as r:
        cp = r.call("POST", "/ledger/checkpoints")
    if json_out:
        print_json({"size": cp["size"], "root": cp["root"], "note": cp["note"]})
    else:
        note = cp["note"]
        console.file.write(note if note.endswith("\n") else note + "\n")


@ledger_app.command("verify")
def ledger_verify(quorum: QuorumOpt = 0, json_out: JsonOpt = False) -> None:
    """Recompute the whole tree and check every checkpoint (a job on the server); exit 1 naming the first
    inconsistency."""
    with remote() as r:
        job = r.call("POST", "/ledger/verify", json={"witnesses": quorum})
        report = r.follow(job, "verifying", quiet=json_out)["result"]
    if json_out:
        print_json(report)
    elif report["ok"]:
        console.print(
            f"[green]ledger intact[/]: {report['size']} entries, root {report['root'][:16]}..., "
            f"{report['checkpoints_checked']} checkpoint(s) checked, {report['checkpoints_witnessed']} witnessed"
        )
        for n in report.get("notes") or []:
            console.print(f"note: {n}")
    else:
        err_console.print(f"[red]ledger verification failed[/]: {report['problem']}")
    if not report["ok"]:
        raise typer.Exit(1)


@ledger_app.command("export")
def ledger_export(
    archive: Annotated[Path, typer.Argument(help="The zip file to write (for `complai ledger verify-export`).")],
    force: ForceOpt = False,
) -> None:
    """Export entries, checkpoints and public keys for an outside auditor, as the server's zip (unzip it
    and run `complai ledger verify-export ledger`)."""
    output_path(archive, force)
    with remote() as r:
        resp = r.response("POST", "/ledger/export")
    write_file(archive, resp.content, force)
    console.print(f"exported the ledger to {archive}")


# --- audits ----------------------------------------------------------------------------------------

audit_app = typer.Typer(
    cls=RemoteGroup, help="Compliance audits against the workspace and its ledger.", invoke_without_command=True
)
REPORT_FORMATS = ("json", "md", "html")


@audit_app.callback()
def audit(
    ctx: typer.Context,
    out: AuditOutOpt = Path("audit-report"),
    format_: AuditFormatOpt = "json,md,html",
    epsilon_cap: EpsilonCapOpt = 10.0,
    since_last: SinceLastOpt = False,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Run every control on the server (a job; the server keeps the reports too) and write the reports
    here; exit 0 when none fails (warnings included), 1 when any does."""
    if ctx.invoked_subcommand is not None:
        return
    formats = [f.strip() for f in format_.split(",") if f.strip()]
    bad = [f for f in formats if f not in REPORT_FORMATS]
    if bad or not formats:
        raise InvalidInput(f"unknown report format(s) {bad} (formats: {', '.join(REPORT_FORMATS)})")
    names = [f"report.{f}" for f in formats]
    check_outputs(out, names, force=force, forbidden=protected())
    body = {"epsilon_cap": epsilon_cap, "since_last": since_last, "formats": formats}
    with remote() as r:
        job = r.call("POST", "/audits", json=body)
        result = r.follow(job, "auditing", quiet=json_out)["result"]
        seq = int(result["audit"])
        reports = {f: r.response("GET", f"/audits/{seq}/report", params={"format": f}).content for f in formats}
    doc = json.loads(reports["json"]) if "json" in reports else None
    output_dir(out, forbidden=protected())
    files = {}
    for f, data in reports.items():
        write_file(out / f"report.{f}", data, force)
        files[f] = str(out / f"report.{f}")
    controls = (doc or {}).get("controls", [])
    summary = result["summary"]
    if json_out:
        print_json(
            {
                "digest": result["digest"],
                "ledger_seq": seq,
                "files": files,
                "summary": summary,
                "controls": [{k: c[k] for k in ("id", "status", "summary")} for c in controls],
            }
        )
    else:
        t = table("control", "status", "summary")
        for c in controls:
            style = {"pass": "green", "fail": "red", "warning": "yellow"}.get(c["status"], "dim")
            t.add_row(c["id"], f"[{style}]{c['status']}[/]", c["summary"])
        console.print(t)
        for c in controls:
            if c["status"] == "warning":
                for item in c["items"]:
                    line = f"{c['id']} warning ({item['item']}): {item['problem']}. {item.get('advice', '')}"
                    console.print(line.strip(), markup=False, highlight=False)
        console.print(
            f"{summary['fail']} fail, {summary.get('warning', 0)} warning, {summary['pass']} pass, "
            f"{summary['not applicable']} not applicable, {summary['not evaluated']} not evaluated; report "
            f"{', '.join(files.values())} (digest in ledger entry {seq})"
        )
    if int(summary["fail"]):
        raise typer.Exit(1)


@audit_app.command("list")
def audit_list(json_out: JsonOpt = False) -> None:
    """The audits the ledger records (run here or on the server), oldest first, with the reports the
    server holds."""
    audits: list[dict[str, Any]] = []
    with remote() as r:
        start = 0
        while True:
            page = r.call("GET", "/audits", params={"start": start, "limit": 500})
            audits.extend(page)
            if len(page) < 500:
                break
            start = page[-1]["seq"] + 1
    if json_out:
        print_json(audits)
        return
    t = table("ledger entry", "time", "actor", "pass", "fail", "n/a", "not evaluated", "reports")
    for a in audits:
        t.add_row(
            str(a["seq"]),
            a["time"],
            a["actor"],
            str(a["passed"]),
            str(a["failed"]),
            str(a["not_applicable"]),
            str(a["not_evaluated"]),
            ", ".join(a["reports"]) or "-",
        )
    console.print(t)


@audit_app.command("report")
def audit_report(
    seq: Annotated[int, typer.Argument(help="The ledger entry that records the audit (see `audit list`).")],
    format_: Annotated[str, typer.Option("--format", help="json, md or html.")] = "json",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the report here, mode 0600 (default: stdout).")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """An audit's report as the server keeps it."""
    if format_ not in REPORT_FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(REPORT_FORMATS)}, not {format_!r}")
    _bounded(seq, "the ledger entry")
    if out is not None:
        output_path(out, force)
    with remote() as r:
        data = r.response("GET", f"/audits/{seq}/report", params={"format": format_}).content
    if out is not None:
        write_file(out, data, force, say=True)
    else:
        text = data.decode("utf-8")
        console.file.write(text if text.endswith("\n") else text + "\n")


@audit_app.command("verify")
def audit_verify(
    report: ReportArg,
    json_out: JsonOpt = False,
) -> None:
    """Check a report against the ledger: unchanged, recorded, and the ledger sound (exit 1 if not)."""
    if not report.is_file():
        raise InvalidInput(f"{report} is not a file")
    with remote() as r, report.open("rb") as fh:
        try:
            result = r.call("POST", "/audits/verify", files={"report": ("report.json", fh, "application/json")})
        except RemoteError as exc:
            if exc.http_status == 422:  # the report or the ledger does not check out: a failed check
                exc.exit_code = 1
            raise
    if json_out:
        print_json(result)
    else:
        console.print(f"report verified: {result['digest']} recorded at ledger entry {result['ledger_seq']}")


# --- subject requests ------------------------------------------------------------------------------

request_app = typer.Typer(
    cls=RemoteGroup, help="Data subject requests: deadlines, verification, fulfilment.", no_args_is_help=True
)


@request_app.command("open")
def request_open(
    type_: RequestTypeOpt,
    subject: RequestSubjectOpt,
    jurisdiction: RequestJurisdictionOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a request; its deadline follows from the jurisdiction."""
    body: dict[str, Any] = {"type": type_, "subject": subject}
    if jurisdiction is not None:
        body["jurisdiction"] = jurisdiction
    with remote() as r:
        print_request(r.call("POST", "/requests", json=body), json_out)


@request_app.command("list")
def request_list(
    overdue: OverdueOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """List requests with their deadlines and days left."""
    with remote() as r:
        rows = r.pages("/requests", {"overdue": overdue})
    print_requests(rows, json_out)


@request_app.command("show")
def request_show(rid: RidArg, json_out: JsonOpt = False) -> None:
    """Show a request: its status, deadlines, verification and fulfilment steps, and whether it came
    through the portal (with what was asked there)."""
    with remote() as r:
        print_request(r.call("GET", f"/requests/{segment(rid)}"), json_out)


@request_app.command("verify")
def request_verify(
    rid: RidArg,
    method: MethodOpt,
    json_out: JsonOpt = False,
) -> None:
    """Record that the requester's identity was verified, and how."""
    with remote() as r:
        print_request(r.call("POST", f"/requests/{segment(rid)}/verify", json={"method": method}), json_out)


@request_app.command("acknowledge")
def request_acknowledge(rid: RidArg, json_out: JsonOpt = False) -> None:
    """Record that the subject was told the request was received."""
    with remote() as r:
        print_request(r.call("POST", f"/requests/{segment(rid)}/acknowledge"), json_out)


@request_app.command("extend")
def request_extend(
    rid: RidArg,
    reason: ExtendReasonOpt,
    json_out: JsonOpt = False,
) -> None:
    """Extend the deadline where the law allows it, with the reason given to the subject."""
    with remote() as r:
        print_request(r.call("POST", f"/requests/{segment(rid)}/extend", json={"reason": reason}), json_out)


@request_app.command("reject")
def request_reject(
    rid: RidArg,
    reason: RejectReasonOpt,
    json_out: JsonOpt = False,
) -> None:
    """Refuse a request, with the reason the subject is given."""
    with remote() as r:
        print_request(r.call("POST", f"/requests/{segment(rid)}/reject", json={"reason": reason}), json_out)


@request_app.command("fulfil")
def request_fulfil(
    rid: RidArg,
    subject: FulfilSubjectOpt = None,
    out: FulfilOutOpt = None,
    purpose: FulfilPurposeOpt = None,
    change: ChangeOpt = None,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Carry the request out on the server; each step's status is kept, failed steps can be retried.

    A request that came through the portal is carried out with the identifier verified there (never
    shown): give no --subject, --purpose or --out; its export is kept for the person on the portal."""
    if out is not None:
        output_path(out, force)
    changes = []
    for c in change or []:
        key, sep, value = c.partition("=")
        dataset, dot, field = key.partition(".")
        if not (sep and dot and dataset and field):
            raise InvalidInput(f"--change {c!r}: expected DATASET.FIELD=VALUE")
        changes.append({"dataset": dataset, "field": field, "value": value})
    with remote() as r:
        req = r.call("GET", f"/requests/{segment(rid)}")
        if req.get("portal") is not None:
            if subject is not None or purpose is not None or out is not None:
                raise InvalidInput(
                    f"request {rid} came through the portal: the identifier and purpose verified there are used "
                    "and the export is kept for the person there; give no --subject, --purpose or --out"
                )
        else:
            if subject is None:
                raise InvalidInput("--subject is required for a request that did not come through the portal")
            if req["type"] in ("access", "portability") and out is None:
                raise InvalidInput("an access or portability request needs --out FILE for the export")
        body: dict[str, Any] = {"changes": changes}
        if subject is not None:
            body["subject"] = subject
        if purpose is not None:
            body["purpose"] = purpose
        done = r.call("POST", f"/requests/{segment(rid)}/fulfil", json=body)
    if done.get("export") is not None and out is not None:
        write_file(out, json.dumps(done["export"], indent=1, default=str), force)
    print_request(done["request"], json_out)


# --- incidents -------------------------------------------------------------------------------------

incident_app = typer.Typer(
    cls=RemoteGroup, help="Incidents (GDPR Art. 33): open, notify within 72 hours, close.", no_args_is_help=True
)


@incident_app.command("list")
def incident_list(json_out: JsonOpt = False) -> None:
    """List incidents with their notification deadlines (72 hours from opening)."""
    with remote() as r:
        rows = r.pages("/incidents")
    print_incidents(rows, json_out)


@incident_app.command("open")
def incident_open(
    description: DescriptionOpt,
    json_out: JsonOpt = False,
) -> None:
    """Open an incident: the 72-hour notification deadline starts now."""
    with remote() as r:
        print_incident(r.call("POST", "/incidents", json={"description": description}), json_out)


@incident_app.command("notify")
def incident_notify(
    incident: IncidentArg,
    authority: AuthorityOpt,
    json_out: JsonOpt = False,
) -> None:
    """Record that the supervisory authority was notified."""
    with remote() as r:
        doc = r.call("POST", f"/incidents/{segment(incident)}/notify", json={"authority": authority})
    print_incident(doc, json_out)


@incident_app.command("close")
def incident_close(incident: IncidentArg, json_out: JsonOpt = False) -> None:
    """Close an incident."""
    with remote() as r:
        print_incident(r.call("POST", f"/incidents/{segment(incident)}/close"), json_out)


# --- DPIAs and records of processing ---------------------------------------------------------------

dpia_app = typer.Typer(cls=RemoteGroup, help="Data protection impact assessments (GDPR Art. 35).", no_args_is_help=True)


@dpia_app.command("generate")
def dpia_generate(
    dataset: DpiaDatasetArg,
    out: GenerateOutOpt = None,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Assess the dataset's processing: triggers, description, necessity, risks found, measures."""
    if out is not None:
        output_path(out, force)
    with remote() as r:
        result = r.call("POST", f"/dpias/{segment(dataset)}")
    if out is not None:
        write_file(out, json.dumps(result["document"], indent=1, default=str), force)
    if json_out:
        print_json(result)
        return
    doc = result["document"]
    console.print(f"DPIA {dataset} v{result['version']} ({result['digest']}): triggers {'; '.join(doc['triggers'])}")
    for k in doc["risks"]:
        console.print(f"  {k['control']}: {k['status']} - {k['finding']}")
    console.print(f"residual risk: {doc['residual_risk']}; sign it off with complai dpia sign {dataset} --by NAME")


@dpia_app.command("sign")
def dpia_sign(
    dataset: DpiaDatasetArg,
    by: ByOpt,
    version: VersionOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Sign off a dataset's DPIA (by default its latest version)."""
    body: dict[str, Any] = {"by": by}
    if version is not None:
        body["version"] = _bounded(version, "--version", lo=1)
    with remote() as r:
        st = r.call("POST", f"/dpias/{segment(dataset)}/sign", json=body)
    if json_out:
        print_json(st)
    else:
        console.print(f"DPIA {dataset} v{st['version']} signed off by {st['signed_by']} at {st['signed_at']}")


@dpia_app.command("status")
def dpia_status(dataset: DpiaDatasetArg, json_out: JsonOpt = False) -> None:
    """Whether the dataset's DPIA is current: signed off, and still describing its processing."""
    with remote() as r:
        st = r.call("GET", f"/dpias/{segment(dataset)}")
    if json_out:
        print_json(st)
    else:
        console.print(f"DPIA {dataset}: " + ("current" if st["current"] else f"not current ({st['why']})"))


def ropa(
    out: RopaOutOpt = None,
    format_: RopaFormatOpt = "json,csv",
    json_out: RopaJsonOutOpt = False,
    force: ForceOpt = False,
) -> None:
    """Generate the records of processing from the datasets' declarations and the sharing agreements."""
    formats = {f.strip() for f in format_.split(",") if f.strip()}
    if not formats <= {"json", "csv"}:
        raise InvalidInput("--format takes json and/or csv")
    names = [f"ropa.{f}" for f in ("json", "csv") if f in formats]
    if out is not None:
        check_outputs(out, names, force=force, forbidden=protected())
    with remote() as r:
        recs = r.call("GET", "/ropa")
    if out is not None:
        output_dir(out, forbidden=protected())
        if "json" in formats:
            write_file(out / "ropa.json", json.dumps(recs, indent=1), force)
        if "csv" in formats:
            from complai.compliance.ropa import to_csv  # heavy: SQLAlchemy; the local form's own CSV

            write_file(out / "ropa.csv", to_csv(recs), force)
    if json_out:
        print_json(recs)
    else:
        for rec in recs:
            console.print(f"{rec['dataset']} / {rec['purpose']}: {rec['lawful_basis']}; retention {rec['retention']}")


# --- principals and tokens -------------------------------------------------------------------------

principal_app = typer.Typer(
    cls=RemoteGroup, help="Principals: people and services that act in the workspace.", no_args_is_help=True
)
token_app = typer.Typer(cls=RemoteGroup, help="API tokens (shown once, stored as a hash).", no_args_is_help=True)


@principal_app.command("list")
def principal_list(json_out: JsonOpt = False) -> None:
    """List principals with their kinds, roles and whether they are disabled (the auditor's view)."""
    with remote() as r:
        rows = r.pages("/principals")
    if json_out:
        keys = ("name", "kind", "roles", "disabled")
        print_json([{k: p[k] for k in keys} for p in rows])
        return
    t = table("principal", "kind", "roles", "disabled")
    for p in rows:
        t.add_row(p["name"], p["kind"], ", ".join(p["roles"]), "yes" if p["disabled"] else "")
    console.print(t)


@principal_app.command("disable")
def principal_disable(name: PrincipalDisableNameArg) -> None:
    """Disable a principal and revoke its tokens (owner only; never yourself)."""
    with remote() as r:
        r.call("POST", f"/principals/{segment(name)}/disable")
    console.print(f"disabled {name} and revoked its tokens")


@token_app.command("create")
def token_create(
    principal: TokenCreatePrincipalOpt = "",
    expires: TokenExpiresOpt = "P90D",
    json_out: JsonOpt = False,
) -> None:
    """Create a token; it is printed once and cannot be shown again (never outliving the token in use)."""
    body: dict[str, Any] = {"expires": None if expires == "never" else expires}
    if principal:
        body["principal"] = principal
    with remote() as r:
        issued = r.call("POST", "/tokens", json=body)
    if json_out:
        print_json({"id": issued["id"], "token": issued["token"]})
    else:
        console.file.write(issued["token"] + "\n")
        err_console.print(f"token {issued['id']}: store it now, it will not be shown again")


def _minute(when: str | None) -> str:
    """An ISO time to the minute, in UTC, for a table (`--json` gives it exactly)."""
    if not when:
        return ""
    try:
        t = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return when
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")


@token_app.command("list")
def token_list(
    principal: TokenListPrincipalOpt = None,
    everyone: EveryoneOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """List tokens: id, principal, created, expiry, last use, revoked. Never a token's secret."""
    params: dict[str, Any] = {"all": everyone}
    if principal is not None:
        params["principal"] = principal
    with remote() as r:
        rows = r.pages("/tokens", params)
    if json_out:
        print_json(rows)
        return
    t = table("id", "principal", "created", "expires", "last used", "revoked")
    for tok in rows:
        t.add_row(
            tok["id"],
            tok["principal"],
            _minute(tok["created"]),
            _minute(tok["expires"]) or "never",
            _minute(tok["last_used"]) or "never",
            _minute(tok["revoked"]),
        )
    console.print(t)


@token_app.command("revoke")
def token_revoke(token_id: TokenIdArg) -> None:
    """Revoke a token: your own, or (owner, or admin for non-owners) another principal's."""
    with remote() as r:
        r.call("DELETE", f"/tokens/{segment(token_id)}")
    console.print(f"revoked token {token_id}")


@token_app.command("max-lifetime")
def token_max_lifetime(
    duration: DurationArg = None,
) -> None:
    """Show or set the longest lifetime of a token minted without the owner role (default P90D)."""
    with remote() as r:
        if duration is not None:
            doc = r.call("PUT", "/tokens/max-lifetime", json={"max_lifetime": duration})
        else:
            doc = r.call("GET", "/tokens/max-lifetime")
    console.print(f"maximum token lifetime without the owner role: {doc['max_lifetime']}")


# --- witnesses -------------------------------------------------------------------------------------

witness_app = typer.Typer(cls=RemoteGroup, help="Witnesses that cosign checkpoints.", no_args_is_help=True)
ledger_app.add_typer(witness_app, name="witness")


@witness_app.command("list")
def witness_list(json_out: JsonOpt = False) -> None:
    """List the verifier keys of the witnesses trusted to cosign checkpoints."""
    with remote() as r:
        keys = r.call("GET", "/ledger/witnesses")
    if json_out:
        print_json([k["vkey"] for k in keys])
    else:
        for k in keys:
            console.file.write(k["vkey"] + "\n")


@witness_app.command("add")
def witness_add(vkey: Annotated[str, typer.Argument(help="The witness's verifier key.")]) -> None:
    """Trust a witness: its cosignatures count toward --witnesses."""
    with remote() as r:
        added = r.call("POST", "/ledger/witnesses", json={"vkey": vkey})
    console.print(f"trusting witness {added['name']}")
