"""`complai serve` as a real process: what it refuses to start, HTTPS with a certificate, a clean stop on
SIGTERM, a job whose server was killed reported failed after a restart, and several workers on
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import sqlite3
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.datasets.adult import load_adult
from complai.errors import InvalidInput
from tests.conftest import PG_URL
from tests.procs import own_processes
from tests.service.live import bearer, prepare_workspace, run_serve, serving, start_server


@pytest.fixture
def empty_ws(tmp_path: Path) -> Path:
    Workspace.init(tmp_path / "ws").close()
    return tmp_path / "ws"


def one_line_refusal(done: object) -> str:
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]  # type: ignore[attr-defined]
    assert done.returncode == 2, done  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_plain_http_beyond_loopback_is_refused(empty_ws: Path) -> None:
    line = one_line_refusal(run_serve(empty_ws, ["--host", "0.0.0.0", "--port", "8000"]))  # noqa: S104
    assert "--insecure" in line and "--cert" in line


def test_several_workers_on_sqlite_are_refused(empty_ws: Path) -> None:
    line = one_line_refusal(run_serve(empty_ws, ["--workers", "2"]))
    assert "PostgreSQL" in line


def test_a_certificate_without_its_key_is_refused(empty_ws: Path, tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    line = one_line_refusal(run_serve(empty_ws, ["--cert", str(cert)]))
    assert "--key" in line


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (PEM files, the key 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    token = prepare_workspace(tmp_path / "ws", rows=20)
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    with serving(tmp_path / "ws", "--cert", str(cert), "--key", str(key), scheme="https", verify=trust) as server:
        assert server.url.startswith("https://")
        r = httpx.get(server.url + "/api/v1/me", headers=bearer(token), verify=trust)
        assert r.status_code == 200 and r.json()["principal"] == "owner"
        assert r.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate stops
            httpx.get(server.url + "/api/v1/health", verify=True)
        plain = server.url.replace("https://", "http://")
        try:  # plain HTTP to the TLS port gets no answer from the API
            answer = httpx.get(plain + "/api/v1/me", headers=bearer(token), timeout=5)
            assert answer.status_code == 400 and "principal" not in answer.text
        except httpx.TransportError:
            pass


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    token = prepare_workspace(tmp_path / "ws", rows=20)
    server = start_server(tmp_path / "ws")
    try:
        assert httpx.get(server.url + "/api/v1/me", headers=bearer(token)).status_code == 200
        port = int(server.url.rsplit(":", 1)[1])
        os.kill(server.proc.pid, signal.SIGTERM)  # as a supervisor stops it: the process, not its group
        # uvicorn shuts down gracefully (the workspace closed by the lifespan), then ends by the signal
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        server.stop(signal.SIGKILL)
    assert "Traceback" not in server.output()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # the port is free again
        s.bind(("127.0.0.1", port))
    assert own_processes([tmp_path]) == []
    ws = Workspace.open(tmp_path / "ws")  # and the workspace opens (nothing left locked or half-written)
    ws.close()


def big_csv(folder: Path, rows: int) -> Path:
    """`rows` Adult rows under subject ids the workspace does not hold yet."""
    df = load_adult("train").head(rows).drop(columns=["split"], errors="ignore").copy()
    df["subject_id"] = [f"K{i:08d}" for i in range(len(df))]
    path = folder / "more.csv"
    df.to_csv(path, index=False)
    return path


def test_a_job_killed_with_its_server_is_reported_failed_after_a_restart(tmp_path: Path) -> None:
    token = prepare_workspace(tmp_path / "ws", rows=50)
    data = big_csv(tmp_path, 30_000)
    stale = "3"
    server = start_server(tmp_path / "ws", "--job-stale-after", stale)
    try:
        with data.open("rb") as f:
            r = httpx.post(
                server.url + "/api/v1/datasets/adult/ingest",
                headers=bearer(token),
                files={"file": ("more.csv", f, "text/csv")},
                data={"mode": "append"},
                timeout=120,
            )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        # the job's state as the store has it (read-only: an ingest on SQLite holds the write lock)
        db = sqlite3.connect(f"file:{tmp_path / 'ws' / 'complai.db'}?mode=ro", uri=True, timeout=30)
        try:
            state, deadline = "queued", time.monotonic() + 60
            while state == "queued" and time.monotonic() < deadline:
                time.sleep(0.05)
                state = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        finally:
            db.close()
        assert state == "running", f"the job is {state}: kill -9 would not land during it"
        time.sleep(0.5)
    finally:
        server.stop(signal.SIGKILL)
    assert own_processes([tmp_path]) == []
    with serving(tmp_path / "ws", "--job-stale-after", stale) as again:
        time.sleep(int(stale) + 1)
        job = httpx.get(f"{again.url}/api/v1/jobs/{job_id}", headers=bearer(token), timeout=60).json()
        assert job["state"] == "failed", job
        assert job["problem"]["title"] == "interrupted"
        listed = httpx.get(f"{again.url}/api/v1/jobs", headers=bearer(token), timeout=60).json()
        assert [j["state"] for j in listed if j["id"] == job_id] == ["failed"]
        # nothing the killed ingest did was kept: the dataset holds its first 50 rows only
        (adult,) = httpx.get(f"{again.url}/api/v1/datasets", headers=bearer(token), timeout=60).json()
        assert adult["records"] == 50


def test_a_live_job_is_not_reported_failed(tmp_path: Path) -> None:
    """The worker's heartbeat keeps a job that outlives the staleness limit alive."""
    token = prepare_workspace(tmp_path / "ws", rows=20)
    with serving(tmp_path / "ws", "--job-stale-after", "2") as server:
        r = httpx.post(server.url + "/api/v1/ledger/verify", headers=bearer(token), json={"witnesses": 0}, timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 60
        job = r.json()
        while job["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=bearer(token), timeout=60).json()
        assert job["state"] == "succeeded", job
        time.sleep(3)  # past the limit: a finished job stays as it ended
        job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=bearer(token), timeout=60).json()
        assert job["state"] == "succeeded"


@pytest.mark.skipif(PG_URL is None, reason="PostgreSQL tests run when COMPLAI_TEST_DATABASE_URL is set")
def test_several_workers_serve_on_postgresql(tmp_path: Path, pg_schema: str) -> None:
    token = prepare_workspace(tmp_path / "ws", rows=100, database_url=pg_schema)
    with serving(tmp_path / "ws", "--workers", "2", timeout=180) as server:
        children = [p for p in own_processes([tmp_path]) if "spawn_main" in p]
        assert len(children) >= 2, own_processes([tmp_path])

        def call(i: int) -> int:
            if i % 4 == 0:
                body = {"sql": "SELECT COUNT(*) FROM adult", "epsilon": 0.01}
                url = server.url + "/api/v1/dp/query?purpose=analytics"
                return httpx.post(url, headers=bearer(token), json=body, timeout=60).status_code
            return httpx.get(server.url + "/api/v1/me", headers=bearer(token), timeout=60).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(call, range(40)))
        assert codes == [200] * 40
        ledger = httpx.get(server.url + "/api/v1/ledger", headers=bearer(token), timeout=60).json()
        assert ledger["entries_by_type"]["dp.query"] == 10


def test_staleness_is_the_services_setting(ws: Workspace, clock: ManualClock) -> None:
    """A job unreported for longer than the limit the service passes is failed; within it, left alone."""
    session = ws.session("owner", "administration")
    job = session.job_create("test.wait")
    session.job_progress(job.id, 1)
    clock.advance(timedelta(seconds=30))
    assert session.job(job.id).state == "running"  # the default limit (two minutes)
    assert [j.state for j in session.jobs(stale_after=timedelta(minutes=1))] == ["running"]
    assert session.job(job.id, stale_after=timedelta(seconds=10)).state == "failed"
    assert session.job(job.id).problem["title"] == "interrupted"  # type: ignore[index]
    with pytest.raises(InvalidInput):
        session.jobs(stale_after=timedelta(0))
