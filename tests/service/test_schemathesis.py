"""The API against its own OpenAPI schema, over a socket: schemathesis generates requests for every
operation the running server publishes at /api/v1/openapi.json and checks each response: never a 5xx,
no status, content type, header or body the schema does not declare.

A real `complai serve` process on a loopback port, over a workspace with the first 200 Adult rows and
a privacy budget, called with an owner's token. Deterministic generation, bounded examples: the same
requests every run. Logging out revokes the token the run uses, so that operation runs last, on a token
of its own.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.live import Server, add_token, prepare_workspace, serving

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
SEED = 20261130
LOGOUT = "DELETE /api/v1/auth/token"

# realistic values where a parameter names something that exists, so requests reach the operation
CONFIG = """
[parameters]
"query.purpose" = "analytics"

[[operations]]
include-path-regex = "^/api/v1/datasets/\\\\{name\\\\}(/records|/budget|/budgets)?$"
include-method-regex = "^GET$"
parameters = { "path.name" = "adult" }
"""


def run_schemathesis(server: Server, token: str, out: Path, *filters: str, examples: int = 3) -> tuple[int, str]:
    config = out / "schemathesis.toml"
    config.write_text(CONFIG)
    cmd = [
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{server.url}/api/v1/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(examples),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--phases",
        "coverage,fuzzing",
        "--workers",
        "1",
        "--continue-on-failure",
        "--request-timeout",
        "60",
        "--no-color",
        "--header",
        f"Authorization: Bearer {token}",
        "--report",
        "json",
        "--report-dir",
        str(out),
        *filters,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=out)
    return done.returncode, done.stdout + done.stderr


def failures(out: Path) -> list[str]:
    lines: list[str] = []
    for report in sorted(out.glob("json-*.json")):
        doc = json.loads(report.read_text())
        for failure in doc.get("failures") or []:
            lines.append(json.dumps(failure, sort_keys=True)[:2000])
    return lines


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> tuple[Server, str, Path]:
    root = tmp_path_factory.mktemp("schemathesis")
    token = prepare_workspace(root / "ws", rows=200)
    with serving(root / "ws") as server:
        yield server, token, root  # type: ignore[misc]


def test_every_operation_answers_as_its_schema_says(live: tuple[Server, str, Path]) -> None:
    server, token, root = live
    out = root / "main"
    out.mkdir()
    rc, text = run_schemathesis(server, token, out, "--exclude-name", LOGOUT)
    assert rc == 0, f"schemathesis found failures:\n{text[-12000:]}\n{failures(out)}"
    generated = re.search(r"(\d+) generated", text)
    assert generated is not None and int(generated.group(1)) > 0, text[-2000:]
    assert server.proc.poll() is None, "the server died under the run"


def test_logout_answers_as_its_schema_says(live: tuple[Server, str, Path]) -> None:
    server, _, root = live
    out = root / "logout"
    out.mkdir()
    token = add_token(server.workspace, "leaving", "analyst")
    rc, text = run_schemathesis(server, token, out, "--include-name", LOGOUT)
    assert rc == 0, f"schemathesis found failures:\n{text[-12000:]}\n{failures(out)}"
