"""Remote forms (`complai --server URL`) of the stewards' and security officers' commands: a subject's
rights carried out (export, erase, rectify, restrict, object), consents, keys, retention and roles. Each
answers as its local form does, from what the API answers; nothing here opens a workspace (see
cli/remote.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from complai.cli.options import (
    BasisOpt,
    BatchSizeOpt,
    ConsentGrantPurposeOpt,
    ConsentWithdrawPurposeOpt,
    FieldOpt,
    FieldsOpt,
    KeepSubjectIdsOpt,
    KindArg,
    LiftOpt,
    MaxUsesOpt,
    NoticeVersionOpt,
    OptOutOpt,
    PasswordStdinOpt,
    PrincipalAddNameArg,
    PrincipalKindOpt,
    ReasonOpt,
    RecipientJurisdictionOpt,
    RecipientKeyOpt,
    RecipientOpt,
    RoleArg,
    RolePrincipalOpt,
    RuleActionOpt,
    RuleDatasetOpt,
    RuleIdArg,
    RulePurposeOpt,
    RuleSubjectArg,
    ShareCreateDatasetOpt,
    ShareCreateExpiresOpt,
    ShareCreatePurposeOpt,
    ShareExportOutOpt,
    SourceOpt,
    SubjectArg,
    SubjectExportOutOpt,
    SubjectObjectPurposeOpt,
    SubjectRectifyDatasetOpt,
    TransferMechanismOpt,
    ValueOpt,
    print_key_status,
    term_detail,
)
from complai.cli.output import print_json, table
from complai.cli.remote import ForceOpt, JsonOpt, RemoteGroup, output_path, remote, segment, write_file
from complai.cli.remote_records import principal_app
from complai.cli.state import console
from complai.errors import InvalidInput

__all__ = [
    "backup_app",
    "consent_app",
    "keys_app",
    "policy_app",
    "principal_app",
    "retention_app",
    "role_app",
    "share_app",
    "subject_app",
    "taxonomy_app",
]

subject_app = typer.Typer(
    cls=RemoteGroup, help="Data subjects: export, erase, rectify, restrict, object.", no_args_is_help=True
)
consent_app = typer.Typer(cls=RemoteGroup, help="Consent records per subject and purpose.", no_args_is_help=True)
keys_app = typer.Typer(cls=RemoteGroup, help="Encryption keys: status and rotation.", no_args_is_help=True)
retention_app = typer.Typer(
    cls=RemoteGroup, help="Retention: delete what is past its dataset's retention.", no_args_is_help=True
)
role_app = typer.Typer(cls=RemoteGroup, help="Roles: owner, admin, auditor, analyst, steward.", no_args_is_help=True)


# --- subjects --------------------------------------------------------------------------------------


@subject_app.command("export")
def subject_export(
    subject: SubjectArg,
    out: SubjectExportOutOpt = None,
    force: ForceOpt = False,
) -> None:
    """Everything held about a subject, as JSON (access / portability); the file is mode 0600."""
    if out:
        output_path(out, force)
    with remote() as r:
        doc = r.response("POST", "/subjects/export", json={"subject": subject}).json()
    text = json.dumps(doc, indent=2, sort_keys=True)
    if out:
        write_file(out, text + "\n", force, say=True)
    else:
        console.file.write(text + "\n")


@subject_app.command("erase")
def subject_erase(subject: SubjectArg, json_out: JsonOpt = False) -> None:
    """Erase a subject: records and consents deleted, data keys destroyed, tombstone in the ledger."""
    with remote() as r:
        seq = r.call("POST", "/subjects/erase", json={"subject": subject})["ledger_seq"]
    if json_out:
        print_json({"erased": True, "ledger_seq": seq})
    else:
        console.print(f"subject erased (ledger entry {seq})")


@subject_app.command("rectify")
def subject_rectify(
    subject: SubjectArg,
    dataset: SubjectRectifyDatasetOpt,
    field: FieldOpt,
    value: ValueOpt,
) -> None:
    """Correct one field in a subject's records."""
    body = {"subject": subject, "dataset": dataset, "field": field, "value": value}
    with remote() as r:
        seq = r.call("POST", "/subjects/rectify", json=body)["ledger_seq"]
    console.print(f"rectified {field} in {dataset} (ledger entry {seq})")


@subject_app.command("restrict")
def subject_restrict(
    subject: SubjectArg,
    reason: ReasonOpt = "",
    lift: LiftOpt = False,
) -> None:
    """Restrict processing of a subject (or lift the restriction)."""
    with remote() as r:
        seq = r.call("POST", "/subjects/restrict", json={"subject": subject, "reason": reason, "lift": lift})
    console.print(f"restriction {'lifted' if lift else 'recorded'} (ledger entry {seq['ledger_seq']})")


@subject_app.command("object")
def subject_object(
    subject: SubjectArg,
    purpose: SubjectObjectPurposeOpt,
    opt_out: OptOutOpt = False,
) -> None:
    """Record a subject's objection (or opt-out) to processing for a purpose."""
    body = {"subject": subject, "purpose": purpose, "opt_out": opt_out}
    with remote() as r:
        seq = r.call("POST", "/subjects/object", json=body)["ledger_seq"]
    console.print(f"{'opt-out' if opt_out else 'objection'} recorded (ledger entry {seq})")


# --- consent ---------------------------------------------------------------------------------------


@consent_app.command("grant")
def consent_grant(
    subject: SubjectArg,
    purpose: ConsentGrantPurposeOpt,
    basis: BasisOpt = "gdpr.consent",
    notice_version: NoticeVersionOpt = "unspecified",
    source: SourceOpt = "cli",
) -> None:
    """Record a subject's consent for a purpose."""
    body = {"subject": subject, "purpose": purpose, "basis": basis, "notice_version": notice_version, "source": source}
    with remote() as r:
        seq = r.call("POST", "/consents", json=body)["ledger_seq"]
    console.print(f"consent for {purpose} recorded (ledger entry {seq})")


@consent_app.command("withdraw")
def consent_withdraw(
    subject: SubjectArg,
    purpose: ConsentWithdrawPurposeOpt,
) -> None:
    """Withdraw a subject's consent for a purpose; reads for it stop including the subject."""
    with remote() as r:
        seq = r.call("POST", "/consents/withdraw", json={"subject": subject, "purpose": purpose})["ledger_seq"]
    console.print(f"consent for {purpose} withdrawn (ledger entry {seq})")


# --- keys and retention ----------------------------------------------------------------------------


@keys_app.command("status")
def keys_status(json_out: JsonOpt = False) -> None:
    """Show the key-encryption key versions and the state of any rotation."""
    with remote() as r:
        st = r.call("GET", "/keys")
    print_key_status(st, json_out)


@keys_app.command("rotate")
def keys_rotate(
    batch_size: BatchSizeOpt = 2000,
    json_out: JsonOpt = False,
) -> None:
    """New key-encryption key; re-wrap every data key (a job on the server; resumes an interrupted rotation)."""
    if not 1 <= batch_size <= 1_000_000:
        raise InvalidInput(f"--batch-size must be between 1 and 1000000, not {batch_size}")
    with remote() as r:
        job = r.call("POST", "/keys/rotate", json={"batch_size": batch_size})
        result: dict[str, Any] = r.follow(job, "re-wrapping data keys", quiet=json_out)["result"]
    if json_out:
        print_json(result)
    else:
        console.print(
            f"{'resumed rotation to' if result['resumed'] else 'rotated to'} KEK version {result['to_version']}: "
            f"{result['deks_rewrapped']:,} data keys re-wrapped, retired versions {result['retired'] or 'none'}"
        )


@retention_app.command("sweep")
def retention_sweep(json_out: JsonOpt = False) -> None:
    """Delete records past retention; crypto-shred subjects left with nothing (a job on the server)."""
    with remote() as r:
        job = r.call("POST", "/retention/sweep")
        result: dict[str, Any] = r.follow(job, "sweeping", quiet=json_out)["result"]
    if json_out:
        print_json(result)
    else:
        console.print(
            f"deleted {result['records_deleted']:,} expired records; {result['subjects_shredded']:,} subjects shredded"
        )


# --- principals and roles --------------------------------------------------------------------------


@principal_app.command("add")
def principal_add(
    name: PrincipalAddNameArg,
    kind: PrincipalKindOpt = "human",
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Add a person or a service (owner only); it has no rights until granted a role or a rule."""
    body: dict[str, Any] = {"name": name, "kind": kind}
    if password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\n")
    with remote() as r:
        p = r.call("POST", "/principals", json=body)
    console.print(f"added {p['kind']} principal {p['name']}")


@role_app.command("grant")
def role_grant(role: RoleArg, principal: RolePrincipalOpt) -> None:
    """Grant a role to a principal (owner only; never to yourself)."""
    with remote() as r:
        r.call("PUT", f"/principals/{segment(principal)}/roles/{segment(role)}")
    console.print(f"granted {role} to {principal}")


@role_app.command("revoke")
def role_revoke(role: RoleArg, principal: RolePrincipalOpt) -> None:
    """Revoke a role from a principal (owner only; never your own)."""
    with remote() as r:
        r.call("DELETE", f"/principals/{segment(principal)}/roles/{segment(role)}")
    console.print(f"revoked {role} from {principal}")


# --- policy rules ----------------------------------------------------------------------------------

policy_app = typer.Typer(
    cls=RemoteGroup, help="Policy rules: who may do what, on which datasets, for which purposes.", no_args_is_help=True
)
RULE_PAGE = 1000


def _local_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule as the local form prints it: the API's `dataset` is the policy's `domain`."""
    out = dict(rule)
    out["domain"] = out.pop("dataset")
    return out


def _rule(effect: str, subject: str, dataset: str, action: str, purpose: str, json_out: bool) -> None:
    body = {"subject": subject, "dataset": dataset, "action": action, "purpose": purpose, "effect": effect}
    with remote() as r:
        rule = r.call("POST", "/policy/rules", json=body)
    if json_out:
        print_json(_local_rule(rule))
    else:
        console.print(f"rule {rule['id']}: {effect} {subject} {action} on {dataset} for {purpose}")


@policy_app.command("allow")
def policy_allow(
    subject: RuleSubjectArg,
    dataset: RuleDatasetOpt,
    action: RuleActionOpt,
    purpose: RulePurposeOpt,
    json_out: JsonOpt = False,
) -> None:
    """Allow SUBJECT to perform ACTION on DATASET for PURPOSE (owner only; never yourself)."""
    _rule("allow", subject, dataset, action, purpose, json_out)


@policy_app.command("deny")
def policy_deny(
    subject: RuleSubjectArg,
    dataset: RuleDatasetOpt,
    action: RuleActionOpt,
    purpose: RulePurposeOpt,
    json_out: JsonOpt = False,
) -> None:
    """An explicit deny: wins over any allow."""
    _rule("deny", subject, dataset, action, purpose, json_out)


@policy_app.command("remove")
def policy_remove(rule_id: RuleIdArg) -> None:
    """Remove a rule (owner only)."""
    if not 1 <= rule_id <= 2**62:
        raise InvalidInput(f"the rule id must be between 1 and {2**62}, not {rule_id}")
    with remote() as r:
        r.call("DELETE", f"/policy/rules/{rule_id}")
    console.print(f"removed rule {rule_id}")


@policy_app.command("show")
def policy_show(json_out: JsonOpt = False) -> None:
    """Show the built-in rules and the workspace's own, in order of creation."""
    rules: list[dict[str, Any]] = []
    with remote() as r:
        while True:
            page = r.call("GET", "/policy/rules", params={"limit": RULE_PAGE, "offset": len(rules)})
            rules.extend(page["rules"])
            builtin = page["builtin"]
            if len(page["rules"]) < RULE_PAGE:
                break
    order = ("subject", "dataset", "action", "purpose", "effect")
    if json_out:
        print_json({"builtin": [[b[k] for k in order] for b in builtin], "rules": [_local_rule(x) for x in rules]})
        return
    t = table("id", "effect", "subject", "action", "dataset", "purpose")
    for b in builtin:
        t.add_row("built-in", b["effect"], b["subject"], b["action"], b["dataset"], b["purpose"])
    for x in rules:
        t.add_row(str(x["id"]), x["effect"], x["subject"], x["action"], x["dataset"], x["purpose"])
    console.print(t)


# --- the vocabulary of schemas ---------------------------------------------------------------------

taxonomy_app = typer.Typer(
    cls=RemoteGroup,
    help="The vocabulary of schemas: data categories, purposes, lawful bases, jurisdictions, subject types.",
    no_args_is_help=True,
)
# the name on the command line (and in the API) -> the schema key its terms are written under
SCHEMA_KEYS: dict[str, str] = {
    "categories": "fields[].category",
    "purposes": "purposes (keys)",
    "bases": "purposes (values)",
    "jurisdictions": "jurisdiction",
    "subjects": "subject_type",
}


@taxonomy_app.command("list")
def taxonomy_list(
    kind: KindArg = None,
    json_out: JsonOpt = False,
) -> None:
    """List the terms a schema may use, with the schema key each kind is written under."""
    if kind is not None and kind not in SCHEMA_KEYS:
        raise InvalidInput(f"unknown kind {kind!r}: give one of {', '.join(SCHEMA_KEYS)}")
    with remote() as r:
        if kind is not None:
            terms = {kind: r.call("GET", f"/vocabulary/{kind}")}
        else:
            every = r.call("GET", "/vocabulary")
            terms = {name: every[name] for name in SCHEMA_KEYS}
    if json_out:
        flat = {name: [{"key": t["key"], "name": t["name"], **t["attrs"]} for t in ts] for name, ts in terms.items()}
        print_json(flat)
        return
    for name, ts in terms.items():
        t = table("key", "name", "details", title=f"{name} (schema: {SCHEMA_KEYS[name]})")
        t.columns[0].no_wrap = True
        for term in ts:
            attrs = term["attrs"]
            about = [str(attrs["description"])] if attrs.get("description") else []
            detail = term_detail(attrs)
            t.add_row(term["key"], term["name"], "; ".join([*about, detail] if detail else about))
        console.print(t)


# --- backups ---------------------------------------------------------------------------------------

backup_app = typer.Typer(cls=RemoteGroup, help="Encrypted backups and restores.", no_args_is_help=True)


@backup_app.command("create")
def backup_create(
    file: Annotated[Path, typer.Argument(help="Backup file to write (here, mode 0600; never over an existing one).")],
    json_out: JsonOpt = False,
) -> None:
    """Consistent, encrypted snapshot of the server's workspace, under the server's backup key
    (keys/backup.key there), downloaded to FILE; restore it on a server with `complai backup restore`."""
    output_path(file, False)
    with remote() as r:
        resp = r.download("POST", "/backups", file, False)
    result = {"file": str(file), "digest": resp.headers.get("X-Complai-Digest"), "ledger_seq": None}
    seq = resp.headers.get("X-Complai-Ledger-Seq")
    result["ledger_seq"] = int(seq) if seq and seq.isdigit() else None
    if json_out:
        print_json(result)
    else:
        digest = str(result["digest"])[:23]
        console.print(f"backup written to {file} ({digest}...), ledger entry {result['ledger_seq']}")


# --- data-sharing agreements -----------------------------------------------------------------------

share_app = typer.Typer(
    cls=RemoteGroup, help="Data-sharing agreements and sealed share packages.", no_args_is_help=True
)
AgreementArg = Annotated[str, typer.Argument(help="The agreement's id.")]


@share_app.command("create")
def share_create(
    recipient: RecipientOpt,
    recipient_key: RecipientKeyOpt,
    dataset: ShareCreateDatasetOpt,
    purpose: ShareCreatePurposeOpt,
    fields: FieldsOpt,
    expires: ShareCreateExpiresOpt = "P30D",
    max_uses: MaxUsesOpt = 1,
    keep_subject_ids: KeepSubjectIdsOpt = False,
    recipient_jurisdiction: RecipientJurisdictionOpt = None,
    transfer_mechanism: TransferMechanismOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a data-sharing agreement on the server (direct identifiers are never shared)."""
    from complai.inputs import read_text_input  # heavy: pandas; the key file read as the local form reads it

    if not 1 <= max_uses <= 1_000_000:
        raise InvalidInput(f"--max-uses must be between 1 and 1000000, not {max_uses}")
    body: dict[str, Any] = {
        "recipient": recipient,
        "recipient_key": read_text_input(recipient_key, "recipient key", 64 * 1024),
        "dataset": dataset,
        "purpose": purpose,
        "fields": [f.strip() for f in fields.split(",") if f.strip()],
        "expires": expires,
        "max_uses": max_uses,
        "pseudonymize_subjects": not keep_subject_ids,
    }
    if recipient_jurisdiction is not None:
        body["recipient_jurisdiction"] = recipient_jurisdiction
    if transfer_mechanism is not None:
        body["transfer_mechanism"] = transfer_mechanism
    with remote() as r:
        a = r.call("POST", "/agreements", json=body)
    if json_out:
        print_json(a)
    else:
        console.print(
            f"agreement {a['id']}: {recipient} may receive {a['fields']} of {dataset} for {purpose} "
            f"until {a['expires_at']}, {a['max_uses']} use(s)"
        )


@share_app.command("list")
def share_list(json_out: JsonOpt = False) -> None:
    """List agreements with their recipients, fields, expiry and uses (the auditor's view)."""
    with remote() as r:
        rows = r.pages("/agreements")
    if json_out:
        print_json(rows)
        return
    t = table("id", "recipient", "dataset", "purpose", "fields", "expires", "uses", "revoked")
    for a in rows:
        t.add_row(
            a["id"],
            a["recipient"],
            a["dataset"],
            a["purpose"],
            ", ".join(a["fields"]),
            a["expires_at"],
            f"{a['uses']}/{a['max_uses']}",
            "yes" if a["revoked"] else "",
        )
    console.print(t)


@share_app.command("revoke")
def share_revoke(agreement: AgreementArg) -> None:
    """Revoke an agreement: no further package can be exported under it."""
    with remote() as r:
        r.call("POST", f"/agreements/{segment(agreement)}/revoke")
    console.print(f"revoked agreement {agreement}")


@share_app.command("export")
def share_export(
    agreement: AgreementArg,
    out: ShareExportOutOpt,
    json_out: JsonOpt = False,
) -> None:
    """Seal one use of an agreement to its recipient on the server, downloaded to a new 0600 file."""
    output_path(out, False)
    with remote() as r:
        resp = r.download("POST", f"/agreements/{segment(agreement)}/shares", out, False)
        terms = next((a for a in r.pages("/agreements") if a["id"] == agreement), None)
    name = resp.headers.get("content-disposition", "")
    use = name.rsplit("-", 1)[-1].split(".", 1)[0] if name else ""
    result = {
        "file": str(out),
        "rows": int(resp.headers.get("X-Complai-Rows", "0")),
        "use": int(use) if use.isdigit() else None,
        "max_uses": terms["max_uses"] if terms else None,
        "ledger_seq": int(resp.headers.get("X-Complai-Ledger-Seq", "0")),
    }
    if json_out:
        print_json(result)
    else:
        recipient = terms["recipient"] if terms else "its recipient"
        console.print(
            f"sealed {result['rows']} rows to {recipient} in {out} (use {result['use']} of {result['max_uses']})"
        )
