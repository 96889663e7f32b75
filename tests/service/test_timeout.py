"""The request deadline: a handler that runs past it is answered 503 with its outcome unknown (a
problem document, or a page under the console), with the security headers of every other answer, while
the handler itself runs on to its end; a fast request, an answer already streaming and an upload within
its longer limit are untouched; a request body that stops arriving is refused 408 by a real server; and
`complai serve` refuses a bad --request-timeout in one line."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.config import ServiceSettings
from complai.service.app import create_app
from tests.service.live import free_port, run_serve, serving

DEADLINE_S = 0.5
SLOW_S = 2.0  # well past the deadline
SECURITY_HEADERS = (
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
    "permissions-policy",
    "cache-control",
    "content-security-policy",
)


class Slow:
    """A handler's work, that lasts until released (or `hold` seconds) and says when it finished."""

    def __init__(self) -> None:
        self.hold = SLOW_S
        self.release = threading.Event()
        self.finished = threading.Event()

    def work(self) -> dict[str, str]:
        self.release.wait(self.hold)
        self.finished.set()
        return {"done": "yes"}


@pytest.fixture
def slow() -> Slow:
    return Slow()


@pytest.fixture
def app(ws: Workspace, service_settings: ServiceSettings, slow: Slow) -> FastAPI:
    """The service with a short deadline, and routes of this test's own that outlast it."""
    settings = dataclasses.replace(service_settings, request_timeout_s=DEADLINE_S, upload_timeout_s=SLOW_S * 5)
    app = create_app(settings, workspace=ws)

    @app.post("/api/v1/test-slow")
    def slow_api() -> dict[str, str]:  # a sync route: in the thread pool, as the service's are
        return slow.work()

    @app.get("/console/test-slow")
    def slow_page() -> dict[str, str]:
        return slow.work()

    @app.post("/api/v1/test-slow/ingest")
    def slow_upload() -> dict[str, str]:
        return slow.work()

    @app.get("/api/v1/test-stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(4):
                yield f"part {i}\n".encode()
                await asyncio.sleep(DEADLINE_S / 2)  # the whole answer takes twice the deadline

        return StreamingResponse(parts(), media_type="text/plain")

    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_a_handler_past_the_deadline_is_a_503_problem_whose_outcome_is_unknown(client: TestClient, slow: Slow) -> None:
    r = client.post("/api/v1/test-slow")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 503 and body["title"] == "timed out"
    assert "unknown" in body["detail"] and "/api/v1/ledger" in body["detail"] and "/api/v1/jobs" in body["detail"]
    assert "nothing was changed" not in body["detail"] and "not carried out" not in body["detail"]
    assert slow.finished.is_set()  # the work was not stopped (the test client returns once the app is done)


def test_a_real_server_answers_while_the_work_goes_on(app: FastAPI, slow: Slow) -> None:
    """Over a socket the 503 comes while the handler still runs (here: until the test releases it)."""
    slow.hold = 120
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), http="h11", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/test-slow", timeout=60)
        assert r.status_code == 503 and "unknown" in r.json()["detail"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert not slow.finished.is_set()
    finally:
        slow.release.set()
        server.should_exit = True
        thread.join(60)
    assert slow.finished.is_set() and not thread.is_alive()


def test_the_deadlines_answer_has_the_security_headers_of_every_other(client: TestClient) -> None:
    usual = client.get("/api/v1/health")
    late = client.post("/api/v1/test-slow")
    assert late.status_code == 503
    for name in SECURITY_HEADERS:
        assert late.headers.get(name) == usual.headers.get(name), name
    assert usual.headers["content-security-policy"].startswith("default-src 'none'")


def test_a_console_page_past_the_deadline_is_an_error_page(client: TestClient) -> None:
    r = client.get("/console/test-slow")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("text/html")
    assert "unknown" in r.text and "/api/v1/ledger" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]  # the pages' policy
    for name in SECURITY_HEADERS:
        assert name in r.headers, name


def test_a_fast_request_is_untouched(client: TestClient, owner_token: str) -> None:
    r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {owner_token}"})
    assert r.status_code == 200 and r.json()["principal"] == "owner"


def test_an_answer_that_began_in_time_is_not_cut(client: TestClient) -> None:
    r = client.get("/api/v1/test-stream")
    assert r.status_code == 200
    assert r.text == "".join(f"part {i}\n" for i in range(4))


def test_an_upload_has_its_own_longer_limit(client: TestClient, slow: Slow) -> None:
    r = client.post("/api/v1/test-slow/ingest")
    assert r.status_code == 200 and r.json() == {"done": "yes"}
    assert slow.finished.is_set()


def test_a_request_body_that_stops_arriving_is_refused_408(tmp_path: Path) -> None:
    ws_path = tmp_path / "ws"
    Workspace.init(ws_path).close()
    with serving(ws_path, "--request-timeout", "2") as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            # a body of 100 bytes declared, 6 sent, the rest never
            s.sendall(
                b"POST /api/v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"a": '
            )
            head = s.recv(65536).decode("latin-1")
    status_line, _, rest = head.partition("\r\n")
    assert status_line == "HTTP/1.1 408 Request Timeout", head
    assert "content-type: application/problem+json" in rest.lower()
    assert "x-content-type-options: nosniff" in rest.lower()


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "nan", "inf", "3601"])
def test_serve_refuses_a_bad_request_timeout_in_one_line(tmp_path: Path, bad: str) -> None:
    Workspace.init(tmp_path / "ws").close()
    done = run_serve(tmp_path / "ws", [f"--request-timeout={bad}"])
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2, done
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--request-timeout" in lines[0], lines
