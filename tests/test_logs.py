"""Logs carry operations, never data: with debug logging on, a run of commands over a dataset of known
personal values writes its operation events to stderr, and none of those values, subject ids, the token
or the exact answer of a DP query appears in them, in either format."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from complai.config import LogSettings, log_settings
from complai.errors import InvalidInput
from complai.logs import FIELDS, LOGGER, configure_logging, log_operation
from tests.cli.test_authn import Result, cli
from tests.vault.conftest import PEOPLE, SCHEMA, consents_frame, people_frame


def complai(ws: Path, *args: str) -> Result:
    return cli("--workspace", str(ws), *args)


def _secrets(token: str) -> list[str]:
    values = [str(v) for person in PEOPLE for v in person if v not in ("retail", "premium")]
    exact_mean = sum(p[3] for p in PEOPLE) / len(PEOPLE)
    return [*values, f"{exact_mean:.1f}", str(int(exact_mean)), token, token.split("_", 2)[2]]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_debug_logs_name_operations_and_no_personal_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    ws = tmp_path / "ws"
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))
    people_frame().to_csv(tmp_path / "people.csv", index=False)
    consents_frame().to_csv(tmp_path / "consents.csv", index=False)
    monkeypatch.setenv("COMPLAI_LOG", fmt)
    monkeypatch.setenv("COLUMNS", "200")
    assert complai(ws, "init").returncode == 0
    setup = [
        ["dataset", "create", "customers", "--schema", str(tmp_path / "schema.yaml")],
        ["dataset", "ingest", "customers", str(tmp_path / "people.csv"), "--consents", str(tmp_path / "consents.csv")],
        ["dp", "budget", "customers", "--set", "5", "1e-6"],
        ["policy", "allow", "role:analyst", "--dataset", "customers", "--action", "*", "--purpose", "credit_scoring"],
        ["principal", "add", "ana", "--kind", "service"],
        ["role", "grant", "analyst", "--principal", "ana"],
    ]
    for args in setup:
        r = complai(ws, *args)
        assert r.returncode == 0, (args, r.stderr)
    token = complai(ws, "token", "create", "--principal", "ana", "--expires", "P1D").stdout.strip()
    assert token.startswith("cpl_")
    logged = [
        [
            "-vv",
            "--token",
            token,
            "dp",
            "query",
            "customers",
            "SELECT AVG(income) FROM customers",
            "--epsilon",
            "1",
            "--purpose",
            "credit_scoring",
        ],
        ["-vv", "subject", "export", "C-1001"],
        ["-vv", "subject", "export", "C-9999"],  # refused: no such subject
        ["-vv", "deid", "text", "Write to margarethe.vandersloot@example.org", "--purpose", "customer_support"],
        ["-vv", "--token", token, "token", "list"],
        ["-vv", "--token", token, "subject", "erase", "C-1002"],  # refused: no right to erase
    ]
    stderr = ""
    for args in logged:
        stderr += complai(ws, *args).stderr
    lines = [line for line in stderr.splitlines() if "complai.session" in line]
    if fmt == "json":
        events = [json.loads(line) for line in lines]
        ops = {e["operation"]: e for e in events}
        assert {"dp_query", "export_subject", "tokens"} <= set(ops), sorted(ops)
        assert ops["dp_query"]["principal"] == "ana" and ops["dp_query"]["purpose"] == "credit_scoring"
        assert ops["dp_query"]["outcome"] == "ok" and isinstance(ops["dp_query"]["ledger_seq"], int)
        assert any(e["outcome"] == "refused" and e["error"] for e in events)
        assert all(set(e) <= {"time", "level", "logger", "event", *FIELDS} for e in events)
    else:
        assert any("dp_query" in line and "principal=ana" in line for line in lines), lines
    leaked = [s for s in _secrets(token) if s in stderr]
    assert leaked == []


def test_log_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPLAI_LOG", raising=False)
    monkeypatch.delenv("COMPLAI_LOG_LEVEL", raising=False)
    assert log_settings() == LogSettings("text", "WARNING")
    assert log_settings(1).level == "INFO" and log_settings(2).level == "DEBUG" and log_settings(5).level == "DEBUG"
    monkeypatch.setenv("COMPLAI_LOG", "JSON")
    monkeypatch.setenv("COMPLAI_LOG_LEVEL", "debug")
    assert log_settings() == LogSettings("json", "DEBUG") and log_settings(1).level == "DEBUG"
    monkeypatch.setenv("COMPLAI_LOG", "xml")
    with pytest.raises(InvalidInput, match="COMPLAI_LOG"):
        log_settings()


def test_a_log_line_carries_only_the_allowed_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings("json", "INFO"))
    try:
        log_operation("read", "ana", "credit_scoring", "refused", 0.0123, error=KeyError, ledger_seq=7)
        logging.getLogger(f"{LOGGER}.session").info("x", extra={"complai": {"value": "Margarethe"}})
        first, second = capsys.readouterr().err.splitlines()
    finally:
        configure_logging(LogSettings("text", "WARNING"))
    event = json.loads(first)
    assert event["operation"] == "read" and event["error"] == "KeyError" and event["duration_ms"] == 12.3
    assert event["ledger_seq"] == 7 and event["level"] == "info"
    assert "Margarethe" not in second and "value" not in json.loads(second)


def test_a_failed_command_prints_one_line_at_the_default_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without -v an operation that fails adds no log line to the command's one-line error."""
    monkeypatch.delenv("COMPLAI_LOG_LEVEL", raising=False)
    ws = tmp_path / "ws"
    assert complai(ws, "init").returncode == 0
    r = complai(ws, "token", "revoke", "0123456789abcdef")  # no such token: refused
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "complai.session" not in r.stderr
    r = complai(ws, "-v", "token", "revoke", "0123456789abcdef")
    assert "revoke_token" in r.stderr and "outcome=refused" in r.stderr
