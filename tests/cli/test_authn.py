"""Who the CLI acts as: --token takes real tokens only, every command authenticates first, an owner's
--as is recorded as delegation, and no error ever repeats a token's secret."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from complai.app.workspace import Workspace
from complai.events import decode_event
from complai.vault.schema import load_schema
from tests.access.test_tokens import _mangled_tokens
from tests.vault.conftest import SCHEMA


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Result:
    """Run the CLI in this process (its real entry point and error contract), capturing its output."""
    from complai.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["complai", *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue())


def one_line(r: Result) -> bool:
    return r.stderr.strip() != "" and r.stderr.strip().count("\n") == 0


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace with a dataset, an analyst `ana` and an auditor `aud`."""
    path = tmp_path_factory.mktemp("authn") / "ws"
    with Workspace.init(path) as w:
        w.catalog.register(load_schema(SCHEMA, w.taxonomy), actor="owner")
        for name, role in (("ana", "analyst"), ("aud", "auditor")):
            w.identity.add("owner", name, "service")
            w.identity.grant_role("owner", name, role)
    yield path


def token_for(path: Path, principal: str, expires: str | None = "P1D") -> str:
    with Workspace.open(path) as w:
        return w.identity.create_token("owner", principal, expires=expires)[1]


def events(path: Path, kind: str) -> list[dict[str, object]]:
    with Workspace.open(path) as w:
        return [decode_event(e.data).record() for e in w.ledger.entries(kind=kind)]


def ledger_size(path: Path) -> int:
    with Workspace.open(path) as w:
        return w.ledger.head().size


# --- --token takes real tokens only ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["ana", "owner", "aud"])
def test_a_principal_name_is_not_a_token(ws: Path, name: str) -> None:
    before = ledger_size(ws)
    for args in (["subject", "export", "C-1001"], ["dp", "budget", "customers"], ["ledger", "status"]):
        r = cli("--workspace", str(ws), "--token", name, *args)
        assert r.returncode == 2 and one_line(r), r.stderr
        assert "invalid, expired or revoked token" in r.stderr
    # nothing was done, or refused, as that principal: only the anonymous refusals are recorded
    with Workspace.open(ws) as w:
        new = [decode_event(e.data) for e in w.ledger.entries(start=before)]
    assert new and all(e.kind == "auth.refused" and e.actor == "anonymous" for e in new)


def test_the_environment_variable_takes_real_tokens_only(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPLAI_TOKEN", "ana")
    r = cli("--workspace", str(ws), "status")
    assert r.returncode == 2 and "invalid, expired or revoked token" in r.stderr
    monkeypatch.setenv("COMPLAI_TOKEN", token_for(ws, "aud"))
    assert cli("--workspace", str(ws), "ledger", "status").returncode == 0


# --- every command authenticates first -------------------------------------------------------------

READ_ONLY_COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["dataset", "list"],
    ["dataset", "show", "customers"],
    ["keys", "status"],
    ["ledger", "status"],
    ["ledger", "show"],
    ["ledger", "verify"],
    ["principal", "list"],
    ["policy", "show"],
    ["model", "list"],
    ["request", "list"],
    ["incident", "list"],
    ["share", "list"],
    ["token", "max-lifetime"],
]


@pytest.fixture(scope="module")
def bad_tokens(ws: Path) -> dict[str, str]:
    revoked = token_for(ws, "aud")
    with Workspace.open(ws) as w:
        w.identity.revoke_token("owner", revoked.split("_")[1])
        w.identity.add("owner", "gone", "service")
    gone = token_for(ws, "gone")
    with Workspace.open(ws) as w:
        w.identity.disable("owner", "gone")
    good = token_for(ws, "aud")
    return {
        "bogus": "cpl_0123456789abcdef_" + "Q" * 43,
        "wrong-secret": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "revoked": revoked,
        "disabled-principal": gone,
        "malformed": "not a token at all",
        "live": good,  # the control: this one works
    }


def refused(r: Result) -> bool:
    return r.returncode == 2 and one_line(r) and "invalid, expired or revoked token" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("args", READ_ONLY_COMMANDS, ids=lambda a: "-".join(a))
def test_a_bogus_token_is_refused_by_every_command(ws: Path, bad_tokens: dict[str, str], args: list[str]) -> None:
    r = cli("--workspace", str(ws), "--token", bad_tokens["bogus"], *args)
    assert refused(r), (r.stdout, r.stderr)


@pytest.mark.parametrize("kind", ["wrong-secret", "revoked", "disabled-principal", "malformed"])
def test_every_kind_of_bad_token_is_refused(ws: Path, bad_tokens: dict[str, str], kind: str) -> None:
    for args in (["status"], ["dataset", "show", "customers"], ["ledger", "show"]):
        r = cli("--workspace", str(ws), "--token", bad_tokens[kind], *args)
        assert refused(r), (args, r.stdout, r.stderr)


def test_a_live_token_opens_the_same_commands(ws: Path, bad_tokens: dict[str, str]) -> None:
    for args in (["status"], ["dataset", "show", "customers"], ["ledger", "status"]):
        r = cli("--workspace", str(ws), "--token", bad_tokens["live"], *args)
        assert r.returncode == 0, r.stderr


def test_a_bad_token_is_refused_before_the_command_reads_its_input(ws: Path, tmp_path: Path) -> None:
    """Authentication comes first: the refusal does not depend on (or reveal anything about) the input."""
    r = cli("--workspace", str(ws), "--token", "cpl_0123456789abcdef_" + "Q" * 43, "dataset", "create", "x", "--schema",
            str(tmp_path / "missing.yaml"))  # fmt: skip
    assert r.returncode == 2 and "invalid, expired or revoked token" in r.stderr and "missing" not in r.stderr


# --- tokens are never echoed -----------------------------------------------------------------------


def test_mangled_tokens_are_never_echoed(ws: Path) -> None:
    token = token_for(ws, "aud")
    secret = token.split("_", 2)[2]
    for mangled in (" " + token, token + " ", "Bearer " + token, token.upper(), token.lower(), token + "\n"):
        for args in (["status"], ["ledger", "status"], ["subject", "export", "C-1001"]):
            r = cli("--workspace", str(ws), "--token", mangled, *args)
            assert r.returncode == 2 and one_line(r), r.stderr
            text = (r.stdout + r.stderr).lower()
            assert secret[4:-4].lower() not in text
    # a whole token where its id belongs (token revoke) is refused without being repeated either
    r = cli("--workspace", str(ws), "token", "revoke", token)
    assert r.returncode == 2 and one_line(r) and "token's id" in r.stderr
    assert secret[4:-4] not in r.stdout + r.stderr


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=_mangled_tokens(), args=st.sampled_from([["status"], ["dataset", "show", "customers"], ["token", "revoke"]])
)
def test_no_command_line_error_repeats_a_secret(ws: Path, case: tuple[str, str], args: list[str]) -> None:
    mangled, secret = case
    if args == ["token", "revoke"]:  # the token where an id belongs, with a live --token
        r = cli("--workspace", str(ws), "token", "revoke", mangled)
    else:
        r = cli("--workspace", str(ws), "--token", mangled, *args)
    assert r.returncode == 2 and one_line(r), r.stderr
    assert secret[8:-8].lower() not in (r.stdout + r.stderr).lower()


# --- --as: an owner acting as another principal, recorded as delegation ----------------------------


def test_owner_acts_as_another_principal_and_the_ledger_says_so(ws: Path) -> None:
    w = ["--workspace", str(ws)]
    before = ledger_size(ws)
    r = cli(*w, "--as", "ana", "subject", "export", "C-1001")  # ana's rights: none
    assert r.returncode == 2 and "may not export" in r.stderr
    r = cli(*w, "--as", "ana", "token", "create", "--expires", "P1D", "--json")  # ana's own token, self-service
    assert r.returncode == 0, r.stderr
    r = cli(*w, "--as", "ana", "token", "create", "--expires", "never")  # ...bounded as ana's is
    assert r.returncode == 2 and "expire within" in r.stderr
    with Workspace.open(ws) as wsp:
        new = [decode_event(e.data) for e in wsp.ledger.entries(start=before)]
    denied = [e for e in new if e.kind == "access.denied"]
    created = [e for e in new if e.kind == "token.created"]
    assert denied and all(e.actor == "ana" and e.delegated_by == "owner" for e in denied)
    assert len(created) == 1 and created[0].actor == "ana" and created[0].delegated_by == "owner"
    assert created[0].record()["delegated_by"] == "owner"
    # without --as nothing is delegated, and the field is absent from the record
    assert cli(*w, "token", "create", "--expires", "P1D").returncode == 0
    assert "delegated_by" not in events(ws, "token.created")[-1]


def test_as_is_for_owners_only(ws: Path) -> None:
    aud = token_for(ws, "aud")
    before = ledger_size(ws)
    r = cli("--workspace", str(ws), "--token", aud, "--as", "owner", "ledger", "status")
    assert r.returncode == 2 and one_line(r) and "needs the owner role" in r.stderr
    r = cli("--workspace", str(ws), "--as", "nobody-here", "status")
    assert r.returncode == 2 and "no principal named" in r.stderr
    with Workspace.open(ws) as w:
        new = [decode_event(e.data) for e in w.ledger.entries(start=before)]
    assert [(e.kind, e.actor) for e in new] == [("access.denied", "aud")]


def test_owner_token_can_delegate(ws: Path) -> None:
    owner_token = token_for(ws, "owner")
    r = cli("--workspace", str(ws), "--token", owner_token, "--as", "aud", "ledger", "status", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["size"] > 0


# --- token create through the CLI ------------------------------------------------------------------


def test_token_create_rules_on_the_command_line(ws: Path) -> None:
    w = ["--workspace", str(ws)]
    ana = token_for(ws, "ana", expires="P10D")
    r = cli(*w, "--token", ana, "token", "create", "--expires", "never")
    assert r.returncode == 2 and "expire within P90D" in r.stderr
    r = cli(*w, "--token", ana, "token", "create", "--principal", "aud", "--expires", "P1D")
    assert r.returncode == 2 and "may not mint tokens for others (the owner role is required)" in r.stderr
    r = cli(*w, "--token", ana, "token", "create", "--expires", "P30D")  # longer than the token in use
    assert r.returncode == 2 and "cannot outlive" in r.stderr
    r = cli(*w, "--token", ana, "token", "create", "--expires", "P5D", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["token"].startswith("cpl_")
    r = cli(*w, "--token", ana, "token", "max-lifetime", "P1Y")
    assert r.returncode == 2 and "owner role is required" in r.stderr
    assert "P90D" in cli(*w, "token", "max-lifetime").stdout
