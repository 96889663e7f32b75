"""A real `complai serve` process for tests that need a socket: a workspace made for it, a free loopback
port, the server's output kept in a log file, and a stop that never outlives the test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

COMPLAI = str(Path(sys.executable).with_name("complai"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve_command(workspace: Path, *args: str) -> list[str]:
    return [COMPLAI, "--workspace", str(workspace), "serve", *args]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPLAI_") or k == "COMPLAI_TEST_DATABASE_URL"}
    env.update(extra or {})
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    workspace: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server (its process group: uvicorn's workers with it) and wait for it to end."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise AssertionError(f"the server did not stop within {timeout} s of signal {sig}") from None


def start_server(
    workspace: Path,
    *args: str,
    host: str = "127.0.0.1",
    scheme: str = "http",
    verify: str | bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
    log: Path | None = None,
) -> Server:
    """Start `complai serve` on a free port and wait until /api/v1/health answers."""
    port = free_port()
    log = log or workspace.parent / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            serve_command(workspace, "--host", host, "--port", str(port), *args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(env),
            start_new_session=True,
        )
    server = Server(proc, f"{scheme}://{host}:{port}", workspace, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}: {server.output()[-2000:]}")
        try:
            r = httpx.get(server.url + "/api/v1/health", verify=verify, timeout=2.0)
            if r.status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"the server did not answer within {timeout} s: {server.output()[-2000:]}")


@contextmanager
def serving(workspace: Path, *args: str, **kw: object) -> Iterator[Server]:
    server = start_server(workspace, *args, **kw)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def run_serve(workspace: Path, args: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`complai serve ARGS` expected to refuse: it returns instead of serving."""
    return subprocess.run(
        serve_command(workspace, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=False,
    )


def prepare_workspace(path: Path, *, rows: int = 200, database_url: str | None = None) -> str:
    """A workspace at `path` holding the first `rows` of the bundled Adult data (with consents and a
    privacy budget) and an owner token, which is returned. Closed before a server opens it."""
    from complai.app.workspace import Workspace
    from tests.dp.conftest import adult_workspace

    ws = Workspace.init(path, database_url=database_url)
    try:
        adult_workspace(ws, rows, epsilon=1000.0, delta=1e-3)
        token: str = ws.session("owner", "security").create_token("owner", "P1D").token
    finally:
        ws.close()
    return token


def add_token(path: Path, name: str, *roles: str, kind: str = "service") -> str:
    """A new principal with `roles`, and a token for it (the workspace opened and closed again)."""
    from complai.app.workspace import Workspace

    ws = Workspace.open(path)
    try:
        owner = ws.session("owner", "security")
        owner.add_principal(name, kind)
        for role in roles:
            owner.grant_role(name, role)
        token: str = owner.create_token(name, "P1D").token
    finally:
        ws.close()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
