"""A real federation on Flower's deployment engine: a SuperLink (the coordinating server) and one
SuperNode per organisation, talking over TLS with SuperNode authentication.

`complai federated server --root DIR --spec SPEC.yaml --nodes N` makes a private CA and the SuperLink's
certificate (for 127.0.0.1 / localhost unless told otherwise) and one authentication key per
organisation, starts the SuperLink (TLS, `--enable-supernode-auth`, no runtime dependency installation),
registers the organisations' public keys, submits complai's ServerApp/ClientApp as a Flower App, waits
for the run to finish and stops the SuperLink. `complai federated client --workspace DIR --superlink
HOST:PORT --root-certificates CA --key KEY` runs one organisation's SuperNode with its workspace.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from complai.errors import InvalidInput
from complai.federated import engine

CA_CERT, SERVER_CERT, SERVER_KEY = "ca.crt", "server.pem", "server.key"


class NodeKey(TypedDict):
    private: str  # OpenSSH private key file (0600)
    public: str


class Pki(TypedDict):
    ca: str  # the federation's CA certificate
    nodes: list[NodeKey]


@dataclass(frozen=True)
class Components:
    """The Flower App's ServerApp and ClientApp, as `module:attribute` names Flower loads."""

    serverapp: str
    clientapp: str


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_pki(directory: Path, nodes: int, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Pki:
    """A CA, the SuperLink's TLS certificate signed by it, and an EC P-384 key per organisation's
    SuperNode (OpenSSH format, as Flower's node authentication reads them). Private keys are 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "complai federation CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    (directory / CA_CERT).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / SERVER_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        directory / SERVER_KEY,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    node_keys: list[NodeKey] = []
    for i in range(nodes):
        nk = ec.generate_private_key(ec.SECP384R1())
        priv = directory / "nodes" / f"node-{i}.key"
        _write_private(
            priv,
            nk.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            ),
        )
        pub = priv.with_suffix(".pub")
        pub.write_bytes(
            nk.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        )
        node_keys.append(NodeKey(private=str(priv), public=str(pub)))
    return Pki(ca=str(directory / CA_CERT), nodes=node_keys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise InvalidInput(f"{name} is not installed (it comes with flwr)")
    return found


def _env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"FLWR_TELEMETRY_ENABLED": "0", "FLWR_HOME": str(flwr_home), "PYTHONUNBUFFERED": "1"})
    # Flower starts its helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_sink(server_workspace: Path, run_id: object) -> Path:
    """Where the deployed ServerApp writes run `run_id`'s result, in the server's workspace."""
    return server_workspace / "federated-runs" / f"run-{run_id}.json"


def write_app(directory: Path, spec: engine.FederatedSpec, server_workspace: Path, components: Components) -> Path:
    """The Flower App `flwr run` submits: the ServerApp and ClientApp named by `components` (module:attribute,
    loaded by Flower by name) with the spec and the server's workspace as run config."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": "complai-federation", "version": "1.0.0", "dependencies": []},
        "tool": {
            "hatch": {"build": {"targets": {"wheel": {"packages": ["."]}}}},
            "flwr": {
                "app": {
                    "publisher": "complai",
                    "components": {"serverapp": components.serverapp, "clientapp": components.clientapp},
                    "config": {"spec": spec.model_dump_json(), "server-workspace": str(server_workspace)},
                }
            },
        },
    }
    (directory / "pyproject.toml").write_text(tomli_w.dumps(doc))
    return directory


class Process:
    """A child process with its log, stopped (and its children) on exit."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._f = log.open("ab")
        self.proc = subprocess.Popen(args, stdout=self._f, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._f.close()


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise InvalidInput(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def start_superlink(root: Path, ports: dict[str, int]) -> Process:
    pki = root / "pki"
    args = [
        _bin("flower-superlink"),
        "--ssl-ca-certfile",
        str(pki / CA_CERT),
        "--ssl-certfile",
        str(pki / SERVER_CERT),
        "--ssl-keyfile",
        str(pki / SERVER_KEY),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--database",
        str(root / "superlink.db"),
        "--host",
        "127.0.0.1",
        "--port",
        str(ports["http"]),
    ]
    proc = Process(args, root / "logs" / "superlink.log", _env(root / "flwr"))
    try:
        _wait_port(ports["http"], 60)  # Control, Fleet and runtime APIs share this HTTPS port
    except BaseException:
        proc.stop()
        raise
    return proc


def write_flwr_config(root: Path, ports: dict[str, int]) -> None:
    home = root / "flwr"
    home.mkdir(parents=True, exist_ok=True)
    doc = {
        "superlink": {
            "default": "complai",
            "complai": {
                "address": f"127.0.0.1:{ports['http']}",
                "root-certificates": str(root / "pki" / CA_CERT),
            },
        }
    }
    (home / "config.toml").write_text(tomli_w.dumps(doc))


def flwr(root: Path, *args: str, timeout: float = 120) -> str:
    r = subprocess.run(
        [_bin("flwr"), *args], capture_output=True, text=True, env=_env(root / "flwr"), timeout=timeout, check=False
    )
    if r.returncode != 0:
        raise InvalidInput(f"flwr {args[0]} failed: {(r.stdout + r.stderr).strip().splitlines()[-1:]}")
    return r.stdout


def start_supernode(workspace: Path, superlink: str, ca: Path, key: Path, port: int, log: Path) -> Process:
    args = [
        _bin("flower-supernode"),
        "--root-certificates",
        str(ca),
        "--superlink",
        superlink,
        "--auth-supernode-private-key",
        str(key),
        "--node-config",
        f"workspace='{workspace}'",
        "--port",
        str(port),
    ]
    env = _env(log.parent / f"flwr-{port}")
    return Process(args, log, env)


def serve(
    root: Path,
    spec: engine.FederatedSpec,
    server_ws: Path,
    components: Components,
    timeout: float = 900,
    on_wait: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the coordinating side of a real federation under `root` (see the module docstring) with the
    server's workspace `server_ws` (it must exist). Writes `root/ready.json` (addresses, CA, node keys)
    once organisations may connect; returns the run's result. While the run goes on (the ServerApp runs
    in a process of Flower's), `on_wait` is called about once a second with the run's id as the
    ServerApp records it. Every process it starts is stopped before it returns."""
    root.mkdir(parents=True, exist_ok=True)
    pki = make_pki(root / "pki", spec.organisations)
    ports = {"http": free_port()}
    write_flwr_config(root, ports)
    app = write_app(root / "app", spec, server_ws, components)
    superlink = start_superlink(root, ports)
    try:
        for node in pki["nodes"]:
            flwr(root, "supernode", "register", node["public"], "complai")
        ready = {
            "superlink": f"127.0.0.1:{ports['http']}",
            "root_certificates": pki["ca"],
            "node_keys": [n["private"] for n in pki["nodes"]],
        }
        (root / "ready.json").write_text(json.dumps(ready))
        out = flwr(root, "run", str(app), "complai", "--format", "json", timeout=120)
        run_id = json.loads(out[out.index("{") :])["run-id"]
        sink = run_sink(server_ws, run_id)
        deadline = time.monotonic() + timeout
        while not sink.exists():
            if time.monotonic() > deadline:
                raise InvalidInput(f"the federated run did not finish within {timeout:.0f} s")
            if superlink.proc.poll() is not None:
                raise InvalidInput("the SuperLink stopped (see logs/superlink.log)")
            if on_wait is not None:
                on_wait(f"run-{run_id}")
            time.sleep(1)
        time.sleep(0.5)
        result: dict[str, Any] = json.loads(sink.read_text())
        if not result.get("ok"):
            raise InvalidInput(f"federated run failed: {result.get('error')}")
        return result
    finally:
        superlink.stop()
        (root / "ready.json").unlink(missing_ok=True)
