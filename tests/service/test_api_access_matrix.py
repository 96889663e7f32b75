"""Who may call which route: each built-in role (owner, admin, auditor, analyst, steward) against every
route of access governance, subject rights and compliance. No response carries a token's secret (a
minted token is a new one). The expected answer is derived from the
documented rules, not from what the service does: the built-in policy (access/authz.py: the owner
role may do everything, the auditor role `audit`, the admin role `admin`; analyst and steward hold no
rule of their own until one names them), the owner role for changes to principals, roles, rules and
the token lifetime, and tokens of others for owners and admins. Allowed: a 2xx; refused: a 403 problem,
each recorded as one access.denied entry."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from complai.access.authz import BUILTIN
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.crypto.sealing import generate_keypair
from complai.service.app import create_app
from tests.service.conftest import bearer, settings_for
from tests.vault.conftest import SCHEMA, consents_frame, people_frame

API = "/api/v1"
ROLES = ("owner", "admin", "auditor", "analyst", "steward")

# The built-in rules as the documentation states them (docs/architecture.md, access/authz.py).
ROLE_ACTIONS: dict[str, set[str]] = {
    "owner": {"*"},
    "admin": {"admin"},
    "auditor": {"audit"},
    "analyst": set(),
    "steward": set(),
}


def allowed(role: str, need: str) -> bool:
    """Whether `role` may: `anyone` (authenticated), `owner` (changes to principals, roles, rules and
    the token lifetime; tokens minted for others), `token_overseer` (others' tokens listed: owner, or
    admin for non-owners), `oversight` (audit or admin), or an action of the purpose-based rules."""
    if need == "anyone":
        return True
    if need == "owner":
        return role == "owner"
    if need == "token_overseer":
        return role in ("owner", "admin")
    actions = ROLE_ACTIONS[role]
    if "*" in actions:
        return True
    if need == "oversight":
        return bool(actions & {"audit", "admin"})
    return need in actions


def test_the_documented_roles_are_the_built_in_rules() -> None:
    documented = {(f"role:{r}", "*", a, "*", "allow") for r, acts in ROLE_ACTIONS.items() for a in acts}
    assert set(BUILTIN) == documented


@dataclass
class Env:
    ws: Workspace
    client: TestClient
    tokens: dict[str, str]
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    key_text: str = ""
    audit_seq: int = 0
    report: bytes = b""


def _wait(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    for _ in range(1000):
        state = client.get(f"{API}/jobs/{job_id}", headers=headers).json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            return state
        time.sleep(0.02)
    raise AssertionError(state)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("matrix")
    ws = Workspace.init(base / "ws", clock=ManualClock())
    try:
        admin = ws.session("owner", "administration")
        admin.create_dataset(admin.parse_schema(SCHEMA))
        ws.session("owner", "credit_scoring").ingest("customers", people_frame(), consents_frame())
        sec = ws.session("owner", "security")
        public = generate_keypair(base / "bank.key")
        sharing = ws.session("owner", "credit_scoring")
        rights = ws.session("owner", "subject_request")
        sec.add_principal("svc-target", "service")
        tokens: dict[str, str] = {}
        data: dict[str, dict[str, Any]] = {}
        for role in ROLES:
            me = f"p-{role}"
            sec.add_principal(me, "service")
            sec.grant_role(me, role)
            tokens[role] = sec.create_token(me, "P1D").token
            for t in ("tgt", "tgt2", "tgt3"):
                sec.add_principal(f"{t}-{role}", "service")
            sec.grant_role(f"tgt3-{role}", "steward")
            rid = {}
            for name, kind in (("verify", "access"), ("reject", "erasure"), ("fulfil", "objection")):
                rid[name] = rights.request_open(kind, "C-1003").value["id"]
            rights.request_verify(rid["fulfil"], "account")
            agreements = [
                sharing.create_agreement("bank", public, "customers", ["income"], recipient_jurisdiction="EU").id
                for _ in range(2)
            ]
            incidents = [ws.session("owner", "security").incident_open(f"incident {i}").value["id"] for i in range(2)]
            data[role] = {
                "spare_token": sec.create_token(me, "P1D").id,
                "rule": sec.add_rule("role:steward", f"r_{role}_*", "read", "credit_scoring").id,
                "rid": rid,
                "agreements": agreements,
                "incidents": incidents,
                "withdraw": {"owner": ("C-1001", "marketing"), "admin": ("C-1001", "credit_scoring")}.get(
                    role, ("C-1002", "marketing")
                ),
            }
        with TestClient(create_app(settings_for(ws), workspace=ws), raise_server_exceptions=False) as client:
            e = Env(ws, client, tokens, data, key_text=(base / "bank.key.pub").read_text())
            owner = bearer(tokens["owner"])
            job = client.post(f"{API}/audits", headers=owner, json={"formats": ["json", "md"]}).json()
            e.audit_seq = _wait(client, owner, job["id"])["result"]["audit"]
            e.report = client.get(f"{API}/audits/{e.audit_seq}/report", headers=owner).content
            yield e
    finally:
        ws.close()


Call = tuple[str, str, Callable[[Env, str], str], Callable[[Env, str], Any], str]


def _p(path: str) -> Callable[[Env, str], str]:
    return lambda e, role: path.format(role=role, **_ids(e, role))


def _ids(e: Env, role: str) -> dict[str, Any]:
    d = e.data[role]
    return {
        "spare": d["spare_token"],
        "rule": d["rule"],
        "verify": d["rid"]["verify"],
        "reject": d["rid"]["reject"],
        "fulfil": d["rid"]["fulfil"],
        "agr0": d["agreements"][0],
        "agr1": d["agreements"][1],
        "inc0": d["incidents"][0],
        "inc1": d["incidents"][1],
        "seq": e.audit_seq,
    }


def _none(e: Env, role: str) -> None:
    return None


def _b(body: dict[str, Any]) -> Callable[[Env, str], dict[str, Any]]:
    def make(e: Env, role: str) -> dict[str, Any]:
        return {k: (v.format(role=role) if isinstance(v, str) else v) for k, v in body.items()}

    return make


def _agreement(e: Env, role: str) -> dict[str, Any]:
    return {
        "recipient": f"bank-{role}",
        "recipient_key": e.key_text,
        "dataset": "customers",
        "purpose": "credit_scoring",
        "fields": ["income"],
        "recipient_jurisdiction": "EU",
    }


def _withdraw(e: Env, role: str) -> dict[str, Any]:
    subject, purpose = e.data[role]["withdraw"]
    return {"subject": subject, "purpose": purpose}


ROUTES: list[Call] = [
    # principals and roles
    ("get", "principals", _p("/principals"), _none, "audit"),
    ("post", "add principal", _p("/principals"), _b({"name": "new-{role}", "kind": "service"}), "owner"),
    ("post", "disable principal", _p("/principals/tgt-{role}/disable"), _none, "owner"),
    ("put", "grant role", _p("/principals/tgt2-{role}/roles/steward"), _none, "owner"),
    ("delete", "revoke role", _p("/principals/tgt3-{role}/roles/steward"), _none, "owner"),
    # policy rules
    ("get", "rules", _p("/policy/rules"), _none, "audit"),
    ("get", "built-in rules", _p("/policy/builtin"), _none, "anyone"),
    (
        "post",
        "add rule",
        _p("/policy/rules"),
        _b({"subject": "role:steward", "dataset": "m_{role}_*", "action": "read", "purpose": "credit_scoring"}),
        "owner",
    ),
    ("delete", "remove rule", _p("/policy/rules/{rule}"), _none, "owner"),
    # tokens
    ("get", "own tokens", _p("/tokens"), _none, "anyone"),
    ("post", "mint own token", _p("/tokens"), _b({"expires": "P1D"}), "anyone"),
    ("post", "mint another's", _p("/tokens"), _b({"principal": "svc-target", "expires": "P1D"}), "owner"),
    ("get", "another's tokens", _p("/tokens?principal=svc-target"), _none, "token_overseer"),
    ("get", "every token", _p("/tokens?all=true"), _none, "owner"),
    ("delete", "revoke own token", _p("/tokens/{spare}"), _none, "anyone"),
    ("get", "max lifetime", _p("/tokens/max-lifetime"), _none, "anyone"),
    ("put", "set max lifetime", _p("/tokens/max-lifetime"), _b({"max_lifetime": "P90D"}), "owner"),
    # agreements and shares (share on the dataset for the agreement's purpose)
    ("post", "create agreement", _p("/agreements"), _agreement, "share"),
    ("get", "agreements", _p("/agreements"), _none, "audit"),
    ("post", "revoke agreement", _p("/agreements/{agr0}/revoke"), _none, "share"),
    ("post", "export share", _p("/agreements/{agr1}/shares"), _none, "share"),
    # subject rights
    ("post", "export subject", _p("/subjects/export"), _b({"subject": "C-1001"}), "export"),
    (
        "post",
        "rectify",
        _p("/subjects/rectify"),
        _b({"subject": "C-1001", "dataset": "customers", "field": "segment", "value": "retail"}),
        "ingest",
    ),
    ("post", "restrict", _p("/subjects/restrict"), _b({"subject": "C-1002", "reason": "contested"}), "erase"),
    ("post", "object", _p("/subjects/object"), _b({"subject": "C-1001", "purpose": "fraud_detection"}), "erase"),
    ("post", "erase", _p("/subjects/erase"), _b({"subject": "C-1004"}), "erase"),
    ("post", "grant consent", _p("/consents"), _b({"subject": "C-1003", "purpose": "marketing"}), "admin"),
    ("post", "withdraw consent", _p("/consents/withdraw"), _withdraw, "admin"),
    # the request register
    ("post", "open request", _p("/requests"), _b({"type": "access", "subject": "C-1003"}), "admin"),
    ("get", "requests", _p("/requests"), _none, "audit"),
    ("get", "request", _p("/requests/{verify}"), _none, "audit"),
    ("post", "verify request", _p("/requests/{verify}/verify"), _b({"method": "document"}), "admin"),
    ("post", "acknowledge request", _p("/requests/{verify}/acknowledge"), _none, "admin"),
    ("post", "extend request", _p("/requests/{verify}/extend"), _b({"reason": "complex"}), "admin"),
    ("post", "reject request", _p("/requests/{reject}/reject"), _b({"reason": "legal hold"}), "admin"),
    ("post", "fulfil request", _p("/requests/{fulfil}/fulfil"), _b({"subject": "C-1003"}), "admin"),
    # retention, keys, backups
    ("post", "retention sweep", _p("/retention/sweep"), _none, "admin"),
    ("get", "key status", _p("/keys"), _none, "oversight"),
    ("post", "rotate keys", _p("/keys/rotate"), _b({}), "admin"),
    ("post", "backup", _p("/backups"), _none, "admin"),
    # audits, RoPA, DPIAs, incidents, status, vocabulary
    ("post", "run audit", _p("/audits"), _b({"formats": ["json"]}), "audit"),
    ("get", "audits", _p("/audits"), _none, "audit"),
    ("get", "audit", _p("/audits/{seq}"), _none, "audit"),
    ("get", "audit report", _p("/audits/{seq}/report?format=md"), _none, "audit"),
    ("post", "verify stored report", _p("/audits/{seq}/verify"), _none, "audit"),
    ("get", "ropa", _p("/ropa"), _none, "audit"),
    ("post", "generate dpia", _p("/dpias/customers"), _none, "admin"),
    ("get", "dpia status", _p("/dpias/customers"), _none, "audit"),
    ("post", "sign dpia", _p("/dpias/customers/sign"), _b({"by": "dpo-{role}"}), "admin"),
    ("post", "open incident", _p("/incidents"), _b({"description": "lost badge"}), "admin"),
    ("get", "incidents", _p("/incidents"), _none, "audit"),
    ("post", "notify incident", _p("/incidents/{inc0}/notify"), _b({"authority": "CNIL"}), "admin"),
    ("post", "close incident", _p("/incidents/{inc1}/close"), _none, "admin"),
    ("get", "status", _p("/status"), _none, "oversight"),
    ("get", "vocabulary", _p("/vocabulary"), _none, "anyone"),
    ("get", "one vocabulary", _p("/vocabulary/bases"), _none, "anyone"),
]


def _denials(ws: Workspace) -> int:
    return len(ws.session("owner", "audit").ledger_entries(kind="access.denied", limit=100_000))


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_what_the_rules_allow(env: Env, role: str) -> None:
    headers = bearer(env.tokens[role])
    wrong: list[str] = []
    refusals = 0
    before = _denials(env.ws)
    jobs: list[str] = []
    for method, name, path, body, need in ROUTES:
        r = env.client.request(method, API + path(env, role), headers=headers, json=body(env, role))
        expect = allowed(role, need)
        ok = 200 <= r.status_code < 300
        if (expect and not ok) or (not expect and r.status_code != 403):
            wrong.append(f"{name}: {r.status_code} ({'allowed' if expect else 'refused'}): {r.text[:160]}")
        if not expect:
            refusals += 1
            if r.status_code == 403:
                assert r.headers["content-type"] == "application/problem+json"
        if r.status_code == 202:
            jobs.append(r.json()["id"])
        if any(t in r.text or t.split("_", 2)[2] in r.text for t in env.tokens.values()):
            wrong.append(f"{name}: a token's secret in the response")
    # the upload route, with the report as a file
    r = env.client.post(
        f"{API}/audits/verify", headers=headers, files={"report": ("report.json", env.report, "application/json")}
    )
    expect = allowed(role, "audit")
    if (200 <= r.status_code < 300) != expect or (not expect and r.status_code != 403):
        wrong.append(f"verify uploaded report: {r.status_code}")
    refusals += 0 if expect else 1
    assert wrong == []
    # every refusal recorded, once; and a request's step its fulfiller may not do (objecting is `erase`)
    # is refused and recorded inside the fulfilment, which answers with the step failed
    step_refused = allowed(role, "admin") and not allowed(role, "erase")
    assert _denials(env.ws) - before == refusals + step_refused
    for job_id in jobs:
        state = _wait(env.client, headers, job_id)
        assert state["state"] == "succeeded", state
