"""Access governance over HTTP: principals, roles, policy rules, API tokens, sharing agreements.

The same operations and purposes as `complai principal|role|policy|token|share` (cli/access.py): changes
to principals, roles and rules are the owner's, views are the auditor's, each decided by the session
(access/authz.py) and recorded. A token is shown once, in the response that issues it, and never
outlives the token of the caller who mints it. A password given for a new principal is never echoed.
A share package is sealed into a private temporary folder of the server, returned as a download and
removed: no route writes to a server path the caller chooses.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from complai.clock import utc_iso
from complai.crypto.sealing import load_public
from complai.service.api.common import CONFLICT, INTEGRITY, NOT_FOUND, Strict, problems
from complai.service.deps import AuditSession, CallerDep, SecuritySession, WorkspaceDep

router = APIRouter(tags=["access"])

Name = Annotated[str, Field(min_length=1, max_length=200)]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="After skipping this many")]
Short = Annotated[str, Field(min_length=1, max_length=200)]


# --- models ------------------------------------------------------------------------------------------


class Changed(BaseModel):
    """A change, recorded: the ledger entry that records it."""

    ledger_seq: int | None


class PrincipalOut(BaseModel):
    name: str
    kind: str
    roles: list[str]
    disabled: bool


class PrincipalIn(Strict):
    name: Name
    kind: Literal["human", "service"] = "human"
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        default=None, description="A password for a human (to log in); never echoed or recorded."
    )


class RuleOut(BaseModel):
    id: int
    subject: str
    dataset: str
    action: str
    purpose: str
    effect: str


class BuiltinRule(BaseModel):
    subject: str
    dataset: str
    action: str
    purpose: str
    effect: str


class Rules(BaseModel):
    builtin: list[BuiltinRule]
    rules: list[RuleOut]


class RuleIn(Strict):
    subject: Annotated[str, Field(min_length=1, max_length=210, description="A principal, or role:NAME")]
    dataset: Annotated[str, Field(min_length=1, max_length=200, description="A dataset or pattern (credit_*, *)")]
    action: Annotated[str, Field(min_length=1, max_length=32)]
    purpose: Annotated[str, Field(min_length=1, max_length=200, description="A taxonomy purpose, or *")]
    effect: Literal["allow", "deny"] = "allow"


class TokenOut(BaseModel):
    """A token as it may be shown: never its secret."""

    id: str
    principal: str
    created: str | None
    expires: str | None
    last_used: str | None
    revoked: str | None


class TokenIn(Strict):
    principal: Name | None = Field(default=None, description="Whose token (default: the caller's own)")
    expires: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default="P90D", description="ISO 8601 duration; null never expires (owners only)"
    )


class IssuedTokenOut(BaseModel):
    """The token, shown this once: store it now."""

    id: str
    token: str
    principal: str
    expires: str | None
    ledger_seq: int


class Lifetime(BaseModel):
    max_lifetime: str


class LifetimeIn(Strict):
    max_lifetime: Annotated[str, Field(min_length=1, max_length=64, description="ISO 8601 duration")]


class AgreementOut(BaseModel):
    id: str
    recipient: str
    recipient_key_id: str
    dataset: str
    purpose: str
    fields: list[str]
    deid: dict[str, bool]
    expires_at: str
    max_uses: int
    uses: int
    revoked: bool
    recipient_jurisdiction: str | None = None
    transfer_mechanism: str | None = None


class AgreementIn(Strict):
    recipient: Name
    recipient_key: Annotated[
        str, Field(min_length=1, max_length=4096, description="The recipient's public key (.pub from share keygen)")
    ]
    dataset: Name
    purpose: Annotated[str, Field(min_length=1, max_length=200, description="What the recipient may use it for")]
    fields: Annotated[list[Short], Field(min_length=1, max_length=1000)]
    expires: Annotated[str, Field(min_length=1, max_length=64)] = "P30D"
    max_uses: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    pseudonymize_subjects: bool = True
    recipient_jurisdiction: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    transfer_mechanism: Annotated[str, Field(min_length=1, max_length=64)] | None = None


def _principal(p: Any) -> PrincipalOut:
    return PrincipalOut(name=p.name, kind=p.kind, roles=list(p.roles), disabled=p.disabled)


def _rule(r: Any) -> RuleOut:
    return RuleOut(id=r.id, subject=r.subject, dataset=r.domain, action=r.action, purpose=r.purpose, effect=r.effect)


def _token(t: Any) -> TokenOut:
    return TokenOut.model_validate(t.as_dict())


def _iso(t: datetime | None) -> str | None:
    return utc_iso(t) if t is not None else None


# --- principals and roles ----------------------------------------------------------------------------


@router.get("/principals", summary="Principals with their kinds, roles and state (auditors)", responses=problems())
def list_principals(session: SecuritySession, limit: Limit = 100, offset: Offset = 0) -> list[PrincipalOut]:
    return [_principal(p) for p in session.list_principals()[offset : offset + limit]]


@router.post(
    "/principals",
    status_code=201,
    summary="Add a person or a service (owners); it has no rights until granted a role or a rule",
    responses=problems(CONFLICT),
)
def add_principal(body: PrincipalIn, session: SecuritySession) -> PrincipalOut:
    return _principal(session.add_principal(body.name, body.kind, body.password))


@router.post(
    "/principals/{name}/disable",
    summary="Disable a principal and revoke its tokens (owners; never oneself)",
    responses=problems(NOT_FOUND),
)
def disable_principal(name: str, session: SecuritySession) -> Changed:
    session.disable_principal(name)
    return Changed(ledger_seq=session.last_seq)


@router.put(
    "/principals/{name}/roles/{role}",
    summary="Grant a role (owners; never to oneself)",
    responses=problems(NOT_FOUND, CONFLICT),
)
def grant_role(name: str, role: str, session: SecuritySession) -> Changed:
    session.grant_role(name, role)
    return Changed(ledger_seq=session.last_seq)


@router.delete(
    "/principals/{name}/roles/{role}",
    summary="Revoke a role (owners; never one's own)",
    responses=problems(NOT_FOUND),
)
def revoke_role(name: str, role: str, session: SecuritySession) -> Changed:
    session.revoke_role(name, role)
    return Changed(ledger_seq=session.last_seq)


# --- policy rules ------------------------------------------------------------------------------------


def _builtin(session_rules: list[tuple[str, str, str, str, str]]) -> list[BuiltinRule]:
    return [BuiltinRule(subject=s, dataset=d, action=a, purpose=p, effect=e) for s, d, a, p, e in session_rules]


@router.get(
    "/policy/rules", summary="The built-in rules and the workspace's own, in order (auditors)", responses=problems()
)
def list_rules(session: SecuritySession, limit: Limit = 100, offset: Offset = 0) -> Rules:
    rules = session.rules()[offset : offset + limit]
    return Rules(builtin=_builtin(session.builtin_rules()), rules=[_rule(r) for r in rules])


@router.get("/policy/builtin", summary="The rules every workspace has (public)", responses=problems())
def builtin_rules(session: SecuritySession) -> list[BuiltinRule]:
    return _builtin(session.builtin_rules())


@router.post(
    "/policy/rules",
    status_code=201,
    summary="Allow (or deny) a principal or role an action on datasets for a purpose (owners)",
    responses=problems(NOT_FOUND, CONFLICT),
)
def add_rule(body: RuleIn, session: SecuritySession) -> RuleOut:
    return _rule(session.add_rule(body.subject, body.dataset, body.action, body.purpose, body.effect))


@router.delete("/policy/rules/{rule_id}", summary="Remove a rule (owners)", responses=problems(NOT_FOUND))
def remove_rule(rule_id: Annotated[int, Path(ge=1, le=2**62)], session: SecuritySession) -> Changed:
    session.remove_rule(rule_id)
    return Changed(ledger_seq=session.last_seq)


# --- tokens ------------------------------------------------------------------------------------------


@router.get(
    "/tokens",
    summary="Tokens (never their secrets): one's own, a principal's, or everyone's (owners)",
    responses=problems(NOT_FOUND),
)
def list_tokens(
    session: SecuritySession,
    principal: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    everyone: Annotated[bool, Query(alias="all")] = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[TokenOut]:
    return [_token(t) for t in session.tokens(principal, everyone=everyone)[offset : offset + limit]]


@router.post(
    "/tokens",
    status_code=201,
    summary="Mint a token, shown once: one's own, or (owners) another's; never outliving the caller's own token",
    responses=problems(NOT_FOUND),
)
def create_token(body: TokenIn, who: CallerDep, ws: WorkspaceDep) -> IssuedTokenOut:
    session = ws.session(who, "security")
    expires = None if body.expires in (None, "never") else body.expires
    issued = session.create_token(body.principal, expires, credential_expires=who.token_expires)
    return IssuedTokenOut(
        id=issued.id,
        token=issued.token,
        principal=issued.principal,
        expires=_iso(issued.expires_at),
        ledger_seq=issued.ledger_seq,
    )


@router.delete(
    "/tokens/{token_id}",
    summary="Revoke a token by id: one's own, or (owner, or admin for non-owners) another's",
    responses=problems(NOT_FOUND),
)
def revoke_token(token_id: str, session: SecuritySession) -> Changed:
    session.revoke_token(token_id)
    return Changed(ledger_seq=session.last_seq)


@router.get(
    "/tokens/max-lifetime",
    summary="The longest lifetime of a token minted without the owner role",
    responses=problems(),
)
def get_max_lifetime(session: SecuritySession) -> Lifetime:
    return Lifetime(max_lifetime=session.token_max_lifetime())


@router.put("/tokens/max-lifetime", summary="Set that maximum (owners)", responses=problems())
def set_max_lifetime(body: LifetimeIn, session: SecuritySession) -> Lifetime:
    return Lifetime(max_lifetime=session.set_token_max_lifetime(body.max_lifetime))


# --- data-sharing agreements -------------------------------------------------------------------------


@router.post(
    "/agreements",
    status_code=201,
    summary="Agree to share fields of a dataset with a recipient for a purpose (share on the dataset)",
    responses=problems(NOT_FOUND, CONFLICT),
)
def create_agreement(body: AgreementIn, who: CallerDep, ws: WorkspaceDep) -> AgreementOut:
    session = ws.session(who, body.purpose)  # an unknown purpose is refused here
    key = load_public(body.recipient_key)
    a = session.create_agreement(
        body.recipient,
        key,
        body.dataset,
        list(body.fields),
        expires=body.expires,
        max_uses=body.max_uses,
        pseudonymize_subjects=body.pseudonymize_subjects,
        recipient_jurisdiction=body.recipient_jurisdiction,
        transfer_mechanism=body.transfer_mechanism,
    )
    return AgreementOut.model_validate(a.as_dict())


@router.get("/agreements", summary="Every agreement, in order of creation (auditors)", responses=problems())
def list_agreements(session: AuditSession, limit: Limit = 100, offset: Offset = 0) -> list[AgreementOut]:
    return [AgreementOut.model_validate(a.as_dict()) for a in session.agreements()[offset : offset + limit]]


@router.post(
    "/agreements/{agreement_id}/revoke",
    summary="Revoke an agreement: no further package is sealed under it",
    responses=problems(NOT_FOUND, INTEGRITY),
)
def revoke_agreement(agreement_id: str, session: SecuritySession) -> Changed:
    session.revoke_agreement(agreement_id)
    return Changed(ledger_seq=session.last_seq)


SHARE_MEDIA = "application/octet-stream"


@router.post(
    "/agreements/{agreement_id}/shares",
    summary="Seal one use of an agreement to its recipient: the package, as a download",
    response_class=Response,
    responses={
        **problems(NOT_FOUND, INTEGRITY),
        200: {
            "content": {SHARE_MEDIA: {"schema": {"type": "string", "format": "binary"}}},
            "description": "The package",
        },
    },
)
def export_share(agreement_id: str, session: SecuritySession) -> Response:
    with tempfile.TemporaryDirectory(prefix="complai-share-") as tmp:
        out = FilePath(tmp) / "share.pkg"
        shared = session.export_share(agreement_id, out)
        data = out.read_bytes()
    headers = {
        "Content-Disposition": f'attachment; filename="share-{agreement_id}-{shared.use}.pkg"',
        "X-Complai-Ledger-Seq": str(shared.ledger_seq),
        "X-Complai-Rows": str(shared.rows),
    }
    return Response(content=data, media_type=SHARE_MEDIA, headers=headers)
