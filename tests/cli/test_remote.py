"""`complai --server URL`: commands sent to a running service (a real `complai serve` process) instead
of a local workspace, as the principal of the token; the service's problems as the CLI's one line."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from complai.cli.remote import RemoteError, check_server_url, problem_line
from complai.errors import InvalidInput
from tests.service.live import COMPLAI, Server, add_token, bearer, child_env, prepare_workspace, serving


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("remote")
    token = prepare_workspace(root / "ws", rows=120)
    with serving(root / "ws") as server:
        yield server, token


def cli(
    *args: str, server: str | None = None, token: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    extra = dict(env or {})
    if server is not None:
        extra["COMPLAI_SERVER"] = server
    if token is not None:
        extra["COMPLAI_TOKEN"] = token
    # a workspace path that does not exist: a remote command must never open (or create) one
    nowhere = Path("/nonexistent/complai-remote-test")
    return subprocess.run(
        [COMPLAI, "--workspace", str(nowhere), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(extra),
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in done.stderr
    return lines[0]


def test_status_comes_from_the_server_not_a_local_workspace(live: tuple[Server, str]) -> None:
    server, token = live
    done = cli("status", "--json", server=server.url, token=token)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert "path" not in doc and doc["database"] == "sqlite"  # where it is stays on the server
    assert doc["datasets"] == 1
    assert not Path("/nonexistent/complai-remote-test").exists()
    text = cli("status", server=server.url, token=token)
    assert text.returncode == 0 and server.url in text.stdout


def test_global_option_server_equals_the_environment_variable(live: tuple[Server, str]) -> None:
    server, token = live
    done = cli("--server", server.url, "--token", token, "dataset", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["dataset"] for r in rows] == ["adult"]
    assert rows[0]["records"] == 120 and rows[0]["subjects"] == 120
    assert "analytics" in rows[0]["purposes"]


def test_ledger_status_is_the_servers_ledger(live: tuple[Server, str]) -> None:
    server, token = live
    done = cli("ledger", "status", "--json", server=server.url, token=token)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    direct = httpx.get(f"{server.url}/api/v1/ledger", headers=bearer(token)).json()
    assert doc["origin"] == direct["origin"] and doc["log_key"] == direct["log_key"]
    assert doc["size"] >= 5 and doc["entries_by_type"]["vault.ingested"] == 1


def test_dp_query_spends_the_servers_budget_and_is_recorded(live: tuple[Server, str]) -> None:
    server, token = live
    before = httpx.get(f"{server.url}/api/v1/ledger", headers=bearer(token)).json()["entries_by_type"]
    done = cli(
        "dp", "query", "adult", "SELECT COUNT(*) FROM adult", "--epsilon", "0.5", "--purpose", "analytics", "--json",
        server=server.url,
        token=token,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc["values"]) == {"count(*)"} and doc["epsilon"] == 0.5
    after = httpx.get(f"{server.url}/api/v1/ledger", headers=bearer(token)).json()["entries_by_type"]
    queries = [k for k in after if k.startswith("dp.")]
    assert queries and sum(after[k] for k in queries) == sum(before.get(k, 0) for k in queries) + 1
    text = cli(
        "dp", "query", "adult", "SELECT COUNT(*) FROM adult", "--epsilon", "0.5", "--purpose", "analytics",
        server=server.url,
        token=token,
    )  # fmt: skip
    assert text.returncode == 0 and "cost: epsilon 0.5" in text.stdout


def test_a_refusal_is_one_line_and_exit_2(live: tuple[Server, str]) -> None:
    server, token = live
    # the dataset's budget cut to 3.0: two queries of 2.0 cannot both be answered
    r = httpx.put(
        f"{server.url}/api/v1/datasets/adult/budgets", headers=bearer(token), json={"epsilon": 3.0, "delta": 0.001}
    )
    assert r.status_code == 200, r.text
    for _ in range(2):
        over = cli(
            "dp", "query", "adult", "SELECT COUNT(*) FROM adult", "--epsilon", "2", "--purpose", "analytics",
            server=server.url,
            token=token,
        )  # fmt: skip
    assert over.returncode == 2
    assert "budget" in one_line_error(over)
    wrong = cli("dp", "query", "adult", "SELECT COUNT(*) FROM other", "--epsilon", "1", "--purpose", "analytics",
                server=server.url, token=token)  # fmt: skip
    assert wrong.returncode == 2 and "reads 'other'" in one_line_error(wrong)


def test_a_principal_without_rights_is_refused_by_the_server(live: tuple[Server, str]) -> None:
    server, _ = live
    analyst = add_token(server.workspace, "remote-analyst", "analyst")
    done = cli(
        "dp", "query", "adult", "SELECT COUNT(*) FROM adult", "--epsilon", "0.1", "--purpose", "analytics",
        server=server.url,
        token=analyst,
    )  # fmt: skip
    assert done.returncode == 2
    one_line_error(done)
    forged = cli("status", server=server.url, token=analyst[:-4] + "AAAA")
    assert forged.returncode == 2
    line = one_line_error(forged)
    assert analyst[-20:] not in forged.stderr and "AAAA" not in line


def test_jobs_list_show_and_cancel(live: tuple[Server, str]) -> None:
    server, token = live
    csv = "subject_id,age\nZ1,30\n"
    r = httpx.post(
        f"{server.url}/api/v1/datasets/adult/ingest",
        headers=bearer(token),
        files={"file": ("rows.csv", csv.encode(), "text/csv")},
        data={"mode": "append"},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    listed = cli("job", "list", "--json", server=server.url, token=token)
    assert listed.returncode == 0, listed.stderr
    assert job_id in [j["id"] for j in json.loads(listed.stdout)]
    for _ in range(100):
        shown = cli("job", "show", job_id, "--json", server=server.url, token=token)
        assert shown.returncode == 0, shown.stderr
        job = json.loads(shown.stdout)
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
    assert job["id"] == job_id and job["kind"] == "dataset.ingest"
    assert job["state"] in ("succeeded", "failed")
    local = subprocess.run(  # the same job, read from the workspace by the local form
        [COMPLAI, "--workspace", str(server.workspace), "job", "show", job_id, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=False,
    )
    assert local.returncode == 0, local.stderr
    assert {k: v for k, v in json.loads(local.stdout).items() if k != "progress"} == {
        k: v for k, v in job.items() if k != "progress"
    }
    again = cli("job", "cancel", job_id, server=server.url, token=token)
    assert again.returncode == 2 and "already" in one_line_error(again)
    missing = cli("job", "show", "0123456789abcdef", server=server.url, token=token)
    assert missing.returncode == 2 and "no job" in one_line_error(missing)
    odd = cli("job", "show", "../ledger", server=server.url, token=token)
    assert odd.returncode == 2 and "not found" in one_line_error(odd).lower()


def test_a_command_without_a_remote_form_says_so(live: tuple[Server, str]) -> None:
    server, token = live
    for args in (["backup", "restore", "x.bak"], ["share", "keygen", "--out", "k"], ["serve"]):
        done = cli(*args, server=server.url, token=token)
        assert done.returncode == 2, done
        assert "no remote form" in one_line_error(done)


def test_without_a_token_nothing_is_sent(live: tuple[Server, str]) -> None:
    server, _ = live
    done = cli("status", server=server.url)
    assert done.returncode == 2 and "--token" in one_line_error(done)


def test_plain_http_to_another_machine_is_refused_before_sending() -> None:
    done = cli("status", server="http://192.0.2.10:8000", token="cpl_0123456789abcdef_" + "A" * 43)
    assert done.returncode == 2 and "in clear" in one_line_error(done)
    with pytest.raises(InvalidInput):
        check_server_url("ftp://127.0.0.1/")
    with pytest.raises(InvalidInput):
        check_server_url("http://127.0.0.1:8000/api/v1")
    assert check_server_url("https://complai.example:8443/") == "https://complai.example:8443"


def test_no_server_there_is_a_failure_exit_1(tmp_path: Path) -> None:
    from tests.service.live import free_port

    done = cli("status", server=f"http://127.0.0.1:{free_port()}", token="cpl_0123456789abcdef_" + "A" * 43)
    assert done.returncode == 1 and "no answer from" in one_line_error(done)


def test_problem_status_decides_the_exit_code() -> None:
    assert RemoteError("refused", 403).exit_code == 2
    assert RemoteError("broken", 500).exit_code == 1
    assert RemoteError("no answer").exit_code == 1
    doc = json.dumps({"title": "not found", "status": 404, "detail": "no job 'x'\n(twice)"})
    assert problem_line(404, "application/problem+json", doc) == "no job 'x' (twice)"
    assert problem_line(502, "text/html", "<html>") == "the server answered HTTP 502"
