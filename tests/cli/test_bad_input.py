"""Bad input, as a user gives it: every case is refused with exit 2 and one line on stderr, no internal
error, and nothing written (ledger size and store unchanged)."""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import pytest
import yaml

from complai.app.workspace import Workspace
from tests.cli.test_cli import run
from tests.vault.conftest import SCHEMA

ACCOUNTS = {
    **SCHEMA,
    "fields": [
        *SCHEMA["fields"],
        {"name": "score", "type": "float", "category": "user.behavior"},
        {"name": "ref", "type": "integer", "category": "user.behavior"},
    ],
}

FILES = {
    "trailing.csv": "customer_id,email,full_name\nT-1,t1@ex.com,hello,\n",
    "ragged.csv": "customer_id,email\n" + "".join(f"T-{i},e{i}{',' if i % 2 else ''}\n" for i in range(50)) + "T-99\n",
    "bigint.csv": "customer_id,ref\nT-1,123456789012345678901\n",
    "inf.csv": "customer_id,score\nT-1,inf\nT-2,-Infinity\nT-3,1e400\n",
    "data.csv": "customer_id,email\nC-1001,a@example.org\n",
    "consents.csv": "subject,purpose\nC-1001,marketing\nC-1001,analytics\n",
    "spec.yaml": "dataset: customers\n",
}

# an agreement that is valid but for the option each case adds
SHARE_CREATE = ["share", "create", "--recipient", "acme", "--recipient-key", "{base}/recipient.key.pub"]
SHARE_CREATE += ["--dataset", "customers", "--purpose", "fraud_detection", "--fields", "segment"]
SHARE_CREATE += ["--recipient-jurisdiction", "EU"]

# (name, arguments with {tmp} for the case folder, what stderr must say)
CASES = [
    ("trailing comma", ["dataset", "ingest", "customers", "{tmp}/trailing.csv"], "line 2 has 4"),
    ("ragged rows, all at once", ["dataset", "ingest", "customers", "{tmp}/ragged.csv"], "26 row(s)"),
    ("integer beyond 64 bits", ["dataset", "ingest", "customers", "{tmp}/bigint.csv"], "64-bit integer range"),
    ("non-finite floats", ["dataset", "ingest", "customers", "{tmp}/inf.csv"], "3 invalid values"),
    ("data is a directory", ["dataset", "ingest", "customers", "{tmp}"], "is a directory"),
    ("data is a device", ["dataset", "ingest", "customers", "/dev/zero"], "is a device"),
    ("data is a FIFO", ["dataset", "ingest", "customers", "{tmp}/fifo"], "is a FIFO"),
    (
        "consents is a directory",
        ["dataset", "ingest", "customers", "{tmp}/data.csv", "--consents", "{tmp}"],
        "consents file",
    ),
    (
        "consent for an undeclared purpose",
        ["dataset", "ingest", "customers", "{tmp}/data.csv", "--consents", "{tmp}/consents.csv"],
        "purpose 'analytics' is not declared",
    ),
    ("consent grant, undeclared purpose", ["consent", "grant", "C-1001", "--purpose", "analytics"], "not declared"),
    ("schema is a directory", ["dataset", "create", "other", "--schema", "{tmp}"], "is a directory"),
    ("schema is a FIFO", ["dataset", "create", "other", "--schema", "{tmp}/fifo"], "is a FIFO"),
    ("absurd token expiry", ["token", "create", "--expires", "P99999999Y"], "longer than 100 years"),
    ("overlong token expiry", ["token", "create", "--expires", "P" + "9" * 30 + "D"], "not an ISO 8601"),
    (
        "absurd agreement expiry",
        [*SHARE_CREATE, "--expires", "P99999999Y"],
        "longer than 100 years",
    ),
    ("absurd audit period", ["audit", "run", "--every", "P99999999W", "--count", "1"], "longer than a year"),
    ("ledger show from beyond 64 bits", ["ledger", "show", "--from", "99999999999999999999"], "--from"),
    ("ledger show from below 0", ["ledger", "show", "--from", "-1"], "--from"),
    ("ledger prove beyond 64 bits", ["ledger", "prove", "99999999999999999999"], "sequence number"),
    ("policy rule id beyond 64 bits", ["policy", "remove", "99999999999999999999"], "rule id"),
    ("key rotation batch beyond range", ["keys", "rotate", "--batch-size", "99999999999999999999"], "--batch-size"),
    ("dpia version beyond 64 bits", ["dpia", "sign", "customers", "--by", "dpo", "--version", "9" * 20], "--version"),
    (
        "agreement uses beyond 64 bits",
        [*SHARE_CREATE, "--max-uses", "99999999999999999999"],
        "--max-uses",
    ),
    (
        "rectify with an integer beyond 64 bits",
        ["subject", "rectify", "C-1001", "--dataset", "customers", "--field", "ref", "--value", "1" * 25],
        "64-bit integer range",
    ),
    (
        "rectify with infinity",
        ["subject", "rectify", "C-1001", "--dataset", "customers", "--field", "score", "--value", "-inf"],
        "not a finite number",
    ),
    (
        "deid table input is a directory",
        ["deid", "table", "{tmp}", "--quasi", "a", "--k", "2", "--out", "{tmp}/o.csv"],
        "is a directory",
    ),
    (
        "deid table input, ragged",
        ["deid", "table", "{tmp}/trailing.csv", "--quasi", "email", "--k", "2", "--out", "{tmp}/o.csv"],
        "line 2 has 4",
    ),
    (
        "deid file input is a device",
        ["deid", "file", "/dev/zero", "--out", "{tmp}/o.txt", "--regex-only"],
        "is a device",
    ),
    ("deid scan input is a FIFO", ["deid", "scan", "{tmp}/fifo", "--regex-only"], "is a FIFO"),
    ("train spec is a directory", ["train", "{tmp}"], "is a directory"),
    ("federated spec is a FIFO", ["federated", "simulate", "{tmp}/fifo", "--root", "{tmp}/fed"], "is a FIFO"),
    ("audit report is a directory", ["audit", "verify", "{tmp}"], "is a directory"),
    # the command line's own usage errors are one line too, not a usage box
    ("missing argument", ["dataset", "create", "--schema", "{tmp}/spec.yaml"], "Missing argument 'NAME'"),
    ("not an integer", ["ledger", "show", "--from", "abc"], "'abc' is not a valid integer"),
    ("no such command", ["nosuch"], "No such command 'nosuch'"),
    ("no such option", ["status", "--frobnicate"], "No such option '--frobnicate'"),
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("bad-input")
    path = base / "ws"
    assert run("init", "--workspace", str(path)).returncode == 0
    (base / "schema.yaml").write_text(yaml.safe_dump(ACCOUNTS))
    (base / "people.csv").write_text("customer_id,ref,score\nC-1001,1,0.5\nC-1002,2,1.5\n")
    w = ["--workspace", str(path)]
    assert run(*w, "dataset", "create", "customers", "--schema", str(base / "schema.yaml")).returncode == 0
    r = run(*w, "dataset", "ingest", "customers", str(base / "people.csv"))
    assert r.returncode == 0, r.stderr
    r = run(*w, "share", "keygen", "--out", str(base / "recipient.key"))
    assert r.returncode == 0, r.stderr
    return path


def complai(*args: str) -> tuple[int, str]:
    """Run the `complai` entry point in this process (its real error handling; no interpreter start-up
    per case): the exit code and stderr."""
    from complai.cli.main import main

    err = io.StringIO()
    with mock.patch.object(sys, "argv", ["complai", *args]), redirect_stdout(io.StringIO()), redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, err.getvalue()


def _state(path: Path) -> tuple[int, dict[str, int], list[str]]:
    with Workspace.open(path) as w:
        return w.ledger.head().size, w.vault.counts(), sorted(os.listdir(path))


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(
    ws: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    os.mkfifo(tmp_path / "fifo")
    before = _state(ws)
    argv = [a.format(tmp=tmp_path, base=ws.parent) for a in args]
    code, stderr = complai("--workspace", str(ws), *argv)
    assert code == 2, (code, stderr[-2000:])
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    assert message in stderr and "internal error" not in stderr and "Traceback" not in stderr
    assert _state(ws) == before
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.txt").exists()


def test_ledger_status_size_is_unchanged_by_every_refusal(ws: Path, tmp_path: Path) -> None:
    """Some of the refusals above as separate processes, judged by the user-facing `ledger status`."""
    size = json.loads(run("--workspace", str(ws), "ledger", "status", "--json").stdout)["size"]
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    os.mkfifo(tmp_path / "fifo")
    for _, args, _ in (CASES[0], CASES[8], CASES[12]):
        argv = [a.format(tmp=tmp_path, base=ws.parent) for a in args]
        r = run("--workspace", str(ws), *argv)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "internal error" not in r.stderr
    assert json.loads(run("--workspace", str(ws), "ledger", "status", "--json").stdout)["size"] == size
