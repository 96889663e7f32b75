"""/api/v1 access governance: principals, roles, policy rules, tokens, agreements and share packages,
through the ASGI client: each route's success, its refusals (recorded, nothing else written), bad
bodies (400, one line, nothing written), and tokens that are expired, revoked or forged."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from complai.access.packages import open_package
from complai.app.workspace import Workspace
from complai.clock import ManualClock, parse_utc
from complai.crypto.sealing import generate_keypair
from tests.service.api_helpers import bad, kinds_since, refused, size
from tests.service.conftest import bearer

API = "/api/v1"


# --- principals and roles ----------------------------------------------------------------------------


def test_owner_adds_a_human_with_a_password_never_echoed_grants_and_disables(
    client: TestClient, ws: Workspace, owner_token: str
) -> None:
    h = bearer(owner_token)
    password = "correct horse battery"
    before = size(ws)
    r = client.post(f"{API}/principals", headers=h, json={"name": "hana", "kind": "human", "password": password})
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "hana", "kind": "human", "roles": [], "disabled": False}
    assert password not in r.text
    r = client.put(f"{API}/principals/hana/roles/admin", headers=h)
    assert r.status_code == 200 and isinstance(r.json()["ledger_seq"], int)
    listed = {p["name"]: p for p in client.get(f"{API}/principals", headers=h).json()}
    assert listed["hana"]["roles"] == ["admin"] and listed["owner"]["roles"] == ["owner"]
    full = client.get(f"{API}/principals", headers=h).json()
    assert client.get(f"{API}/principals?limit=1&offset=1", headers=h).json() == full[1:2]
    assert client.get(f"{API}/principals?limit=1001", headers=h).status_code == 400
    r = client.delete(f"{API}/principals/hana/roles/admin", headers=h)
    assert r.status_code == 200
    r = client.post(f"{API}/principals/hana/disable", headers=h)
    assert r.status_code == 200
    listed = {p["name"]: p for p in client.get(f"{API}/principals", headers=h).json()}
    assert listed["hana"] == {"name": "hana", "kind": "human", "roles": [], "disabled": True}
    assert kinds_since(ws, before) == [
        "principal.added",
        "role.changed",
        "role.changed",
        "principal.disabled",
    ]
    assert password not in str(ws.session("owner", "audit").ledger_entries(start=before, limit=100))


def test_principal_refusals_self_changes_unknown_names_and_bad_bodies(
    client: TestClient, ws: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    # principal changes are the owners refused and recorded
    admin = bearer(token_for("adam", "admin"))
    before = size(ws)
    r = client.post(f"{API}/principals", headers=admin, json={"name": "eve", "kind": "service"})
    refused(ws, r, before)
    assert "eve" not in [p.name for p in ws.session("owner", "security").list_principals()]
    before = size(ws)
    refused(ws, client.put(f"{API}/principals/adam/roles/owner", headers=admin), before)
    before = size(ws)
    refused(ws, client.post(f"{API}/principals/owner/disable", headers=admin), before)

    # no principal grants itself a role or disables itself
    h = bearer(owner_token)
    before = size(ws)
    refused(ws, client.put(f"{API}/principals/owner/roles/admin", headers=h), before)
    before = size(ws)
    refused(ws, client.post(f"{API}/principals/owner/disable", headers=h), before)

    # unknown principal is 404 and bad bodies are 400
    h = bearer(owner_token)
    assert client.post(f"{API}/principals/nobody/disable", headers=h).status_code == 404
    assert client.put(f"{API}/principals/nobody/roles/admin", headers=h).status_code == 404
    before = size(ws)
    bad(ws, client.post(f"{API}/principals", headers=h, json={"name": "x", "kind": "robot"}), before)
    bad(ws, client.post(f"{API}/principals", headers=h, json={"name": "x", "extra": 1}), before)
    bad(ws, client.post(f"{API}/principals", headers=h, json={"name": 7}), before)
    bad(
        ws,
        client.post(f"{API}/principals", headers=h, json={"name": "svc", "kind": "service", "password": "p" * 20}),
        before,
    )
    bad(
        ws,
        client.post(
            f"{API}/principals",
            headers=h,
            content=b"{not json",
        ),
        before,
    )
    bad(ws, client.put(f"{API}/principals/owner/roles/emperor", headers=h), before)
    r = client.post(f"{API}/principals", headers=h, json={"name": "dup", "kind": "service"})
    assert r.status_code == 201
    before = size(ws)
    r = client.post(f"{API}/principals", headers=h, json={"name": "dup", "kind": "service"})
    assert r.status_code == 409 and size(ws) == before


# --- policy rules ------------------------------------------------------------------------------------


def test_rules_added_listed_removed_builtin_and_refused(
    client: TestClient, ws: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    # rules added listed removed and builtin
    h = bearer(owner_token)
    ws.session("owner", "security").add_principal("ana", "service")
    r = client.post(
        f"{API}/policy/rules",
        headers=h,
        json={"subject": "ana", "dataset": "credit_*", "action": "query_dp", "purpose": "credit_scoring"},
    )
    assert r.status_code == 201, r.text
    rule = r.json()
    assert {k: rule[k] for k in ("subject", "dataset", "action", "purpose", "effect")} == {
        "subject": "ana",
        "dataset": "credit_*",
        "action": "query_dp",
        "purpose": "credit_scoring",
        "effect": "allow",
    }
    shown = client.get(f"{API}/policy/rules", headers=h).json()
    assert [x["id"] for x in shown["rules"]] == [rule["id"]]
    # the built-in rules as documented in access/authz.py
    documented = {
        ("role:owner", "*", "*", "*", "allow"),
        ("role:auditor", "*", "audit", "*", "allow"),
        ("role:admin", "*", "admin", "*", "allow"),
    }
    builtin = client.get(f"{API}/policy/builtin", headers=h).json()
    assert {(b["subject"], b["dataset"], b["action"], b["purpose"], b["effect"]) for b in builtin} == documented
    assert shown["builtin"] == builtin
    r = client.delete(f"{API}/policy/rules/{rule['id']}", headers=h)
    assert r.status_code == 200
    assert client.get(f"{API}/policy/rules", headers=h).json()["rules"] == []
    assert client.delete(f"{API}/policy/rules/{rule['id']}", headers=h).status_code == 404

    # rule refusals and bad rules
    auditor = bearer(token_for("aud", "auditor"))
    body = {"subject": "aud", "dataset": "*", "action": "read", "purpose": "credit_scoring"}
    before = size(ws)
    refused(ws, client.post(f"{API}/policy/rules", headers=auditor, json=body), before)
    assert ws.session("owner", "security").rules() == []
    owner = bearer(ws.session("owner", "security").create_token("owner", "P1D").token)
    before = size(ws)
    bad(ws, client.post(f"{API}/policy/rules", headers=owner, json={**body, "action": "fly"}), before)
    bad(ws, client.post(f"{API}/policy/rules", headers=owner, json={**body, "effect": "maybe"}), before)
    bad(ws, client.delete(f"{API}/policy/rules/zero", headers=owner), before)
    assert client.get(f"{API}/policy/rules", headers=auditor).status_code == 200  # the auditor's view


# --- tokens ------------------------------------------------------------------------------------------


def test_a_token_is_shown_once_works_and_is_never_listed(client: TestClient, ws: Workspace, owner_token: str) -> None:
    h = bearer(owner_token)
    ws.session("owner", "security").add_principal("svc", "service")
    r = client.post(f"{API}/tokens", headers=h, json={"principal": "svc", "expires": "P1D"})
    assert r.status_code == 201, r.text
    issued = r.json()
    token = issued["token"]
    assert token.startswith("cpl_") and issued["principal"] == "svc"
    assert client.get(f"{API}/me", headers=bearer(token)).json()["principal"] == "svc"
    secrets = (token, token.split("_", 2)[2], owner_token, owner_token.split("_", 2)[2])
    for path in ("/tokens?all=true", "/tokens", "/principals", "/me", "/tokens/max-lifetime"):
        text = client.get(f"{API}{path}", headers=h).text
        assert not any(s in text for s in secrets), path
    mine = client.get(f"{API}/tokens", headers=bearer(token)).json()
    assert [t["id"] for t in mine] == [issued["id"]] and set(mine[0]) == {
        "id",
        "principal",
        "created",
        "expires",
        "last_used",
        "revoked",
    }
    r = client.delete(f"{API}/tokens/{issued['id']}", headers=bearer(token))  # one's own
    assert r.status_code == 200
    r = client.get(f"{API}/me", headers=bearer(token))
    assert r.status_code == 401 and token not in r.text


def test_expired_revoked_and_forged_tokens_are_401(
    client: TestClient, ws: Workspace, clock: ManualClock, token_for: Callable[..., str]
) -> None:
    token = token_for("ana", "analyst")
    assert client.get(f"{API}/tokens", headers=bearer(token)).status_code == 200
    forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    for t in (forged, "cpl_nothing_here", "owner"):
        r = client.get(f"{API}/tokens", headers=bearer(t))
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert t not in r.text
    clock.advance(timedelta(days=1, seconds=1))
    r = client.get(f"{API}/principals", headers=bearer(token))
    assert r.status_code == 401
    fresh = ws.session("owner", "security").create_token("ana", "P1D")
    ws.session("owner", "security").revoke_token(fresh.id)
    assert client.post(f"{API}/tokens", headers=bearer(fresh.token), json={}).status_code == 401


def test_a_minted_token_never_outlives_the_callers(
    client: TestClient, ws: Workspace, clock: ManualClock, token_for: Callable[..., str]
) -> None:
    owner_short = ws.session("owner", "security").create_token("owner", "P2D")
    h = bearer(owner_short.token)
    before = size(ws)
    for expires in ("P3D", None, "never"):  # longer, or never: refused even for an owner
        r = client.post(f"{API}/tokens", headers=h, json={"expires": expires})
        assert r.status_code == 403, (expires, r.text)
        assert "outlive" in r.json()["detail"]
    assert kinds_since(ws, before) == ["access.denied"] * 3
    clock.advance(timedelta(days=1))  # the caller's token has a day left: a day is the most it may mint
    assert client.post(f"{API}/tokens", headers=h, json={"expires": "P2D"}).status_code == 403
    r = client.post(f"{API}/tokens", headers=h, json={"expires": "P1D"})
    assert r.status_code == 201, r.text
    assert parse_utc(r.json()["expires"]) <= owner_short.expires_at
    # an owner mints for another, within the caller's expiry; neither an admin nor an analyst does
    ws.session("owner", "security").add_principal("svc", "service")
    r = client.post(f"{API}/tokens", headers=h, json={"principal": "svc", "expires": "P2D"})
    assert r.status_code == 403 and "outlive" in r.json()["detail"]
    r = client.post(f"{API}/tokens", headers=h, json={"principal": "svc", "expires": "P1D"})
    assert r.status_code == 201, r.text
    assert r.json()["principal"] == "svc" and parse_utc(r.json()["expires"]) <= owner_short.expires_at
    admin = bearer(token_for("adam", "admin"))
    analyst = bearer(token_for("ana", "analyst"))
    for minter in (admin, analyst):
        for target in ("svc", "owner"):
            before = size(ws)
            r = client.post(f"{API}/tokens", headers=minter, json={"principal": target, "expires": "P1D"})
            refused(ws, r, before)
            assert "may not mint tokens for others" in r.json()["detail"]
    assert [t["principal"] for t in client.get(f"{API}/tokens?principal=svc", headers=h).json()] == ["svc"]


def test_token_listing_revoking_others_and_max_lifetime(
    client: TestClient, ws: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    # token listing and revoking others
    ana_token = token_for("ana", "analyst")
    ana_id = client.get(f"{API}/tokens", headers=bearer(ana_token)).json()[0]["id"]
    steward = bearer(token_for("stu", "steward"))
    before = size(ws)
    refused(ws, client.get(f"{API}/tokens?principal=ana", headers=steward), before)
    before = size(ws)
    refused(ws, client.get(f"{API}/tokens?all=true", headers=steward), before)
    before = size(ws)
    refused(ws, client.delete(f"{API}/tokens/{ana_id}", headers=steward), before)
    before = size(ws)
    refused(ws, client.delete(f"{API}/tokens/{'f' * 16}", headers=steward), before)  # not a probe for ids
    admin = bearer(token_for("adam", "admin"))
    assert [t["id"] for t in client.get(f"{API}/tokens?principal=ana", headers=admin).json()] == [ana_id]
    assert client.delete(f"{API}/tokens/{ana_id}", headers=admin).status_code == 200
    assert client.get(f"{API}/me", headers=bearer(ana_token)).status_code == 401
    before = size(ws)
    bad(ws, client.get(f"{API}/tokens?principal=ana&all=true", headers=admin), before)

    # max token lifetime is shown to all and set by owners
    ana = bearer(token_for("ann", "analyst"))
    assert client.get(f"{API}/tokens/max-lifetime", headers=ana).json() == {"max_lifetime": "P90D"}
    before = size(ws)
    refused(ws, client.put(f"{API}/tokens/max-lifetime", headers=ana, json={"max_lifetime": "P1D"}), before)
    h = bearer(owner_token)
    before = size(ws)
    bad(ws, client.put(f"{API}/tokens/max-lifetime", headers=h, json={"max_lifetime": "soon"}), before)
    bad(ws, client.put(f"{API}/tokens/max-lifetime", headers=h, json={"max_lifetime": 7}), before)
    r = client.put(f"{API}/tokens/max-lifetime", headers=h, json={"max_lifetime": "P7D"})
    assert r.status_code == 200 and r.json() == {"max_lifetime": "P7D"}
    before = size(ws)
    r = client.post(f"{API}/tokens", headers=ana, json={"expires": "P8D"})
    assert r.status_code == 403 and "P7D" in r.json()["detail"]


# --- agreements and share packages -------------------------------------------------------------------


def test_agreements_created_listed_shared_revoked_and_refused(
    client: TestClient, customers: Workspace, owner_token: str, tmp_path: Path, token_for: Callable[..., str]
) -> None:
    # agreement created listed exported as a download and revoked
    ws = customers
    h = bearer(owner_token)
    public = generate_keypair(tmp_path / "bank.key")
    assert public
    pub_text = (tmp_path / "bank.key.pub").read_text()
    body = {
        "recipient": "bank",
        "recipient_key": pub_text,
        "dataset": "customers",
        "purpose": "credit_scoring",
        "fields": ["income", "segment"],
        "max_uses": 2,
        "recipient_jurisdiction": "EU",
    }
    r = client.post(f"{API}/agreements", headers=h, json=body)
    assert r.status_code == 201, r.text
    agreement = r.json()
    assert agreement["fields"] == ["income", "segment"] and agreement["uses"] == 0
    assert agreement["recipient_jurisdiction"] == "EU"  # what was agreed comes back, transfer terms included
    auditor = bearer(token_for("aud", "auditor"))
    assert [a["id"] for a in client.get(f"{API}/agreements", headers=auditor).json()] == [agreement["id"]]
    r = client.post(f"{API}/agreements/{agreement['id']}/shares", headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment")
    package = tmp_path / "share.pkg"
    package.write_bytes(r.content)
    opened = open_package(package, tmp_path / "bank.key", tmp_path / "opened")
    assert opened["rows"] == 4 and opened["fields"] == ["income", "segment"]
    assert "Vandersloot" not in (tmp_path / "opened" / "data.csv").read_text()
    r = client.post(f"{API}/agreements/{agreement['id']}/revoke", headers=h)
    assert r.status_code == 200
    before = size(ws)
    r = client.post(f"{API}/agreements/{agreement['id']}/shares", headers=h)
    assert r.status_code == 403 and "revoked" in r.json()["detail"]  # the agreement's state, not a rule
    assert size(ws) == before
    assert client.post(f"{API}/agreements/no-such/shares", headers=h).status_code == 404
    assert client.post(f"{API}/agreements/no-such/revoke", headers=h).status_code == 404

    # agreement refusals and bad bodies
    generate_keypair(tmp_path / "r.key")
    body = {
        "recipient": "bank",
        "recipient_key": (tmp_path / "r.key.pub").read_text(),
        "dataset": "customers",
        "purpose": "credit_scoring",
        "fields": ["income"],
        "recipient_jurisdiction": "EU",
    }
    admin = bearer(token_for("adam", "admin"))  # admin is not `share`
    before = size(ws)
    refused(ws, client.post(f"{API}/agreements", headers=admin, json=body), before)
    h = bearer(owner_token)
    before = size(ws)
    bad(ws, client.post(f"{API}/agreements", headers=h, json={**body, "recipient_key": "not a key"}), before)
    bad(ws, client.post(f"{API}/agreements", headers=h, json={**body, "max_uses": 0}), before)
    bad(ws, client.post(f"{API}/agreements", headers=h, json={**body, "max_uses": "1"}), before)
    bad(ws, client.post(f"{API}/agreements", headers=h, json={**body, "fields": ["full_name"]}), before)
    assert client.post(f"{API}/agreements", headers=h, json={**body, "dataset": "nothing"}).status_code == 404
    assert len(ws.session("owner", "audit").agreements()) == 1  # the first one only
