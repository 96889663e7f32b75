"""Access commands: principals, tokens, roles, policy rules, sharing agreements."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from complai.access.packages import open_package
from complai.cli.common import (
    console,
    err_console,
    open_session,
    print_exact,
    print_json,
    protected_paths,
    state,
    table,
)
from complai.cli.options import (
    DurationArg,
    EveryoneOpt,
    FieldsOpt,
    JsonOpt,
    KeepSubjectIdsOpt,
    MaxUsesOpt,
    PasswordStdinOpt,
    PrincipalAddNameArg,
    PrincipalDisableNameArg,
    PrincipalKindOpt,
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
    TokenCreatePrincipalOpt,
    TokenExpiresOpt,
    TokenIdArg,
    TokenListPrincipalOpt,
    TransferMechanismOpt,
)
from complai.crypto.sealing import generate_keypair, key_id, load_public
from complai.inputs import bounded_int, read_text_input

principal_app = typer.Typer(help="Principals: people and services that act in the workspace.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (shown once, stored as a hash).", no_args_is_help=True)
role_app = typer.Typer(help="Roles: owner, admin, auditor, analyst, steward.", no_args_is_help=True)
policy_app = typer.Typer(
    help="Policy rules: who may do what, on which datasets, for which purposes.", no_args_is_help=True
)
share_app = typer.Typer(help="Data-sharing agreements and sealed share packages.", no_args_is_help=True)


@principal_app.command("add")
def principal_add(
    name: PrincipalAddNameArg,
    kind: PrincipalKindOpt = "human",
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Add a person or a service (owner only); it has no rights until granted a role or a rule."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with open_session("security") as (_, session):
        p = session.add_principal(name, kind, password)
    console.print(f"added {p.kind} principal {p.name}")


@principal_app.command("list")
def principal_list(json_out: JsonOpt = False) -> None:
    """List principals with their kinds, roles and whether they are disabled (the auditor's view)."""
    with open_session("security") as (_, session):
        rows = session.list_principals()
    if json_out:
        print_json([{"name": p.name, "kind": p.kind, "roles": list(p.roles), "disabled": p.disabled} for p in rows])
        return
    t = table("principal", "kind", "roles", "disabled")
    for p in rows:
        t.add_row(p.name, p.kind, ", ".join(p.roles), "yes" if p.disabled else "")
    console.print(t)


@principal_app.command("disable")
def principal_disable(name: PrincipalDisableNameArg) -> None:
    """Disable a principal and revoke its tokens (owner only; never yourself)."""
    with open_session("security") as (_, session):
        session.disable_principal(name)
    console.print(f"disabled {name} and revoked its tokens")


@token_app.command("create")
def token_create(
    principal: TokenCreatePrincipalOpt = "",
    expires: TokenExpiresOpt = "P90D",
    json_out: JsonOpt = False,
) -> None:
    """Create a token; it is printed once and cannot be shown again.

    For yourself, or (owner role) for another principal. Without the owner role a token lives
    at most the workspace's maximum token lifetime (`token max-lifetime`); no token outlives the token
    you are using."""
    with open_session("security") as (_, session):
        issued = session.create_token(
            principal or None,
            None if expires == "never" else expires,
            credential_expires=state.caller.token_expires if state.caller else None,
        )
    if json_out:
        print_json({"id": issued.id, "token": issued.token})
    else:
        print_exact(issued.token)
        err_console.print(f"token {issued.id}: store it now, it will not be shown again")


def _minute(when: datetime | None) -> str:
    """A time to the minute, in UTC, for a table (`--json` gives it exactly)."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ") if when is not None else ""


@token_app.command("list")
def token_list(
    principal: TokenListPrincipalOpt = None,
    everyone: EveryoneOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """List tokens: id, principal, created, expiry, last use, revoked. Never a token's secret."""
    with open_session("security") as (_, session):
        rows = session.tokens(principal, everyone=everyone)
    if json_out:
        print_json([t.as_dict() for t in rows])
        return
    t = table("id", "principal", "created", "expires", "last used", "revoked")
    for tok in rows:
        t.add_row(
            tok.id,
            tok.principal,
            _minute(tok.created_at),
            _minute(tok.expires_at) or "never",
            _minute(tok.last_used_at) or "never",
            _minute(tok.revoked_at),
        )
    console.print(t)


@token_app.command("revoke")
def token_revoke(token_id: TokenIdArg) -> None:
    """Revoke a token: your own, or (owner, or admin for non-owners) another principal's."""
    with open_session("security") as (_, session):
        session.revoke_token(token_id)
    console.print(f"revoked token {token_id}")


@token_app.command("max-lifetime")
def token_max_lifetime(
    duration: DurationArg = None,
) -> None:
    """Show or set the longest lifetime of a token minted without the owner role (default P90D)."""
    with open_session("security") as (_, session):
        if duration is not None:
            current = session.set_token_max_lifetime(duration)
        else:
            current = session.token_max_lifetime()
    console.print(f"maximum token lifetime without the owner role: {current}")


@role_app.command("grant")
def role_grant(role: RoleArg, principal: RolePrincipalOpt) -> None:
    """Grant a role to a principal (owner only; never to yourself)."""
    with open_session("security") as (_, session):
        session.grant_role(principal, role)
    console.print(f"granted {role} to {principal}")


@role_app.command("revoke")
def role_revoke(role: RoleArg, principal: RolePrincipalOpt) -> None:
    """Revoke a role from a principal (owner only; never your own)."""
    with open_session("security") as (_, session):
        session.revoke_role(principal, role)
    console.print(f"revoked {role} from {principal}")


def _rule(effect: str, subject: str, dataset: str, action: str, purpose: str, json_out: bool) -> None:
    with open_session("security") as (_, session):
        rule = session.add_rule(subject, dataset, action, purpose, effect)
    if json_out:
        print_json(rule.as_dict())
    else:
        console.print(f"rule {rule.id}: {effect} {subject} {action} on {dataset} for {purpose}")


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
    bounded_int(rule_id, "the rule id")
    with open_session("security") as (_, session):
        session.remove_rule(rule_id)
    console.print(f"removed rule {rule_id}")


@policy_app.command("show")
def policy_show(json_out: JsonOpt = False) -> None:
    """Show the built-in rules and the workspace's own, in order of creation."""
    with open_session("security") as (_, session):
        rules = session.rules()
        builtin = session.builtin_rules()
    if json_out:
        print_json({"builtin": [list(r) for r in builtin], "rules": [r.as_dict() for r in rules]})
        return
    t = table("id", "effect", "subject", "action", "dataset", "purpose")
    for s, d, a, p, e in builtin:
        t.add_row("built-in", e, s, a, d, p)
    for r in rules:
        t.add_row(str(r.id), r.effect, r.subject, r.action, r.domain, r.purpose)
    console.print(t)


@share_app.command("keygen")
def share_keygen(
    out: Annotated[Path, typer.Option("--out", help="Private key file; the public key goes to OUT.pub.")],
) -> None:
    """Create a recipient key pair (X25519)."""
    public = generate_keypair(out, forbidden=protected_paths())
    console.print(f"private key {out} (mode 0600), public key {out}.pub (id {key_id(public)})")


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
    """Create a data-sharing agreement (direct identifiers are never shared)."""
    bounded_int(max_uses, "--max-uses", lo=1)
    key = load_public(read_text_input(recipient_key, "recipient key", 64 * 1024))
    with open_session(purpose) as (_, session):
        a = session.create_agreement(
            recipient,
            key,
            dataset,
            [f.strip() for f in fields.split(",") if f.strip()],
            expires=expires,
            max_uses=max_uses,
            pseudonymize_subjects=not keep_subject_ids,
            recipient_jurisdiction=recipient_jurisdiction,
            transfer_mechanism=transfer_mechanism,
        )
    if json_out:
        print_json(a.as_dict())
    else:
        console.print(
            f"agreement {a.id}: {recipient} may receive {a.fields} of {dataset} for {purpose} "
            f"until {a.expires_at}, {a.max_uses} use(s)"
        )


@share_app.command("list")
def share_list(json_out: JsonOpt = False) -> None:
    """List agreements with their recipients, fields, expiry and uses (the auditor's view)."""
    with open_session("audit") as (_, session):
        rows = session.agreements()
    if json_out:
        print_json([a.as_dict() for a in rows])
        return
    t = table("id", "recipient", "dataset", "purpose", "fields", "expires", "uses", "revoked")
    for a in rows:
        t.add_row(
            a.id,
            a.recipient,
            a.dataset,
            a.purpose,
            ", ".join(a.fields),
            a.expires_at,
            f"{a.uses}/{a.max_uses}",
            "yes" if a.revoked else "",
        )
    console.print(t)


@share_app.command("revoke")
def share_revoke(agreement: Annotated[str, typer.Argument(help="The agreement's id.")]) -> None:
    """Revoke an agreement: no further package can be exported under it."""
    with open_session("security") as (_, session):
        session.revoke_agreement(agreement)
    console.print(f"revoked agreement {agreement}")


@share_app.command("export")
def share_export(
    agreement: Annotated[str, typer.Argument(help="The agreement's id.")],
    out: ShareExportOutOpt,
    json_out: JsonOpt = False,
) -> None:
    """Seal one use of an agreement to its recipient."""
    with open_session("security") as (_, session):
        shared = session.export_share(agreement, out, forbidden=protected_paths())
    if json_out:
        print_json(shared.as_dict())
    else:
        console.print(
            f"sealed {shared.rows} rows to {shared.recipient} in {out} (use {shared.use} of {shared.max_uses})"
        )


@share_app.command("open")
def share_open(
    file: Annotated[Path, typer.Argument(help="A package from `complai share export`.")],
    key: Annotated[Path, typer.Option("--key", help="The recipient's private key file.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for data.csv and manifest.json.")],
    log_key: Annotated[str | None, typer.Option("--log-key", help="Pin the sender's ledger verifier key.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Recipient side: decrypt a package and verify its data and ledger proof (no workspace needed)."""
    result = open_package(file, key, out, log_key, forbidden=protected_paths())
    if json_out:
        print_json(result)
    else:
        console.print(
            f"opened {result['rows']} rows ({', '.join(result['fields'])}); share event {result['ledger_seq']} "
            f"proven in the sender's ledger"
        )
