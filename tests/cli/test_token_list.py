"""`complai token list`: ids, principals, times and last use of tokens, never a secret or its hash; one's
own by default, another's or everyone's only for those who may revoke them; refusals are recorded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.clock import parse_utc
from complai.compliance import engine
from tests.cli.test_authn import cli, events, ledger_size, one_line, token_for


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An owner, an admin `adm`, an analyst `ana` and a second owner `boss`."""
    path = tmp_path_factory.mktemp("token-list") / "ws"
    with Workspace.init(path) as w:
        for name, role in (("adm", "admin"), ("ana", "analyst"), ("boss", "owner")):
            w.identity.add("owner", name, "service")
            w.identity.grant_role("owner", name, role)
    yield path


def listing(path: Path, *args: str, options: tuple[str, ...] = ()) -> list[dict[str, object]]:
    """`token list --json` with global `args` and the command's `options`."""
    r = cli("--workspace", str(path), *args, "token", "list", *options, "--json")
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))


def test_own_tokens_with_their_last_use_and_never_a_secret(ws: Path) -> None:
    token = token_for(ws, "ana")
    token_id, secret = token.split("_")[1], token.split("_", 2)[2]
    before = datetime.now(UTC) - timedelta(seconds=1)
    rows = listing(ws, "--token", token)  # this command is itself the token's first use
    mine = [r for r in rows if r["id"] == token_id]
    assert len(mine) == 1 and {str(r["principal"]) for r in rows} == {"ana"}
    row = mine[0]
    assert set(row) == {"id", "principal", "created", "expires", "last_used", "revoked"}
    assert row["revoked"] is None and row["last_used"] is not None
    assert before <= parse_utc(str(row["last_used"])) <= datetime.now(UTC)
    assert parse_utc(str(row["expires"])) - parse_utc(str(row["created"])) == timedelta(days=1)
    out = json.dumps(rows)
    assert secret not in out and hashlib.sha256(secret.encode()).hexdigest() not in out


def test_an_unused_token_was_never_used_and_the_table_says_so(ws: Path) -> None:
    token_id = token_for(ws, "adm").split("_")[1]
    [row] = [r for r in listing(ws, "--as", "adm") if r["id"] == token_id]  # --as: no token is used
    assert row["last_used"] is None
    r = cli("--workspace", str(ws), "--as", "adm", "token", "list")
    assert r.returncode == 0 and "never" in r.stdout and token_id[:8] in r.stdout


def test_revoked_tokens_show_when(ws: Path) -> None:
    token_id = token_for(ws, "ana").split("_")[1]
    assert cli("--workspace", str(ws), "token", "revoke", token_id).returncode == 0
    [row] = [r for r in listing(ws, options=("--all",)) if r["id"] == token_id]
    assert row["revoked"] is not None and row["principal"] == "ana"


def test_owner_sees_everyone_admin_sees_non_owners(ws: Path) -> None:
    token_for(ws, "boss")
    everyone = {str(r["principal"]) for r in listing(ws, options=("--all",))}
    assert {"ana", "adm", "boss"} <= everyone
    admin = token_for(ws, "adm")
    assert {str(r["principal"]) for r in listing(ws, "--token", admin, options=("--principal", "ana"))} == {"ana"}


@pytest.mark.parametrize(
    ("who", "args"),
    [
        ("ana", ["--all"]),
        ("ana", ["--principal", "adm"]),
        ("adm", ["--all"]),
        ("adm", ["--principal", "boss"]),
    ],
)
def test_others_tokens_are_refused_and_the_refusal_recorded(ws: Path, who: str, args: list[str]) -> None:
    token = token_for(ws, who)
    denied = len(events(ws, "access.denied"))
    size = ledger_size(ws)
    r = cli("--workspace", str(ws), "--token", token, "token", "list", *args)
    assert r.returncode == 2 and one_line(r) and "may not list" in r.stderr
    assert r.stdout == ""
    assert len(events(ws, "access.denied")) == denied + 1 and ledger_size(ws) == size + 1


def test_principal_and_all_together_are_refused(ws: Path) -> None:
    r = cli("--workspace", str(ws), "token", "list", "--all", "--principal", "ana")
    assert r.returncode == 2 and one_line(r)


def test_last_use_is_not_a_ledger_event_and_the_audit_stays_clean(ws: Path) -> None:
    token = token_for(ws, "ana")
    size = ledger_size(ws)
    for _ in range(3):
        assert cli("--workspace", str(ws), "--token", token, "token", "list").returncode == 0
    assert ledger_size(ws) == size  # a use writes no event
    with Workspace.open(ws) as w:  # RECON-1 reconciles tokens with the ledger: uses change nothing there
        finding = engine.CHECKS["reconciliation"](engine.AuditContext(compliance_services(w.services), w.clock.now()))
    assert finding.status == "pass", finding.items
