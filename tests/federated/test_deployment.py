"""The real deployment: `complai federated server` runs a SuperLink (TLS, SuperNode authentication) and
three `complai federated client` processes join it as organisations (a fourth with an unregistered
key cannot); two rounds with secure aggregation; every process started is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from complai.app.workspace import Workspace
from complai.events import decode_event
from tests.procs import own_processes, sessions_under

SPEC = {"organisations": 3, "rounds": 2, "rows": 1500, "seed": 3, "secure_aggregation": True}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "complai.cli.main", *args]


def test_three_organisations_train_over_tls_with_authenticated_supernodes(tmp_path: Path) -> None:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    spec = tmp_path / "fl.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    root = tmp_path / "fed"
    r = subprocess.run(
        _cli("federated", "prepare", str(spec), "--root", str(root), "--json"),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    layout = json.loads(r.stdout)
    server = subprocess.Popen(
        _cli("federated", "server", str(spec), "--root", str(root), "--json", "--timeout", "600"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    clients: list[subprocess.Popen] = []
    sessions = {server.pid}
    try:
        deadline = time.monotonic() + 120
        while not (root / "ready.json").exists():
            assert server.poll() is None, server.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the SuperLink did not become ready"
            time.sleep(0.5)
        ready = json.loads((root / "ready.json").read_text())
        sessions |= sessions_under([server.pid])  # the SuperLink runs in a session of its own
        assert ready["superlink"].startswith("127.0.0.1:")
        assert all(oct(Path(k).stat().st_mode & 0o777) == "0o600" for k in ready["node_keys"])
        for ws, key in zip(layout["organisations"], ready["node_keys"], strict=True):
            clients.append(
                subprocess.Popen(
                    _cli(
                        "federated",
                        "client",
                        "--workspace",
                        ws,
                        "--superlink",
                        ready["superlink"],
                        "--root-certificates",
                        ready["root_certificates"],
                        "--key",
                        key,
                    ),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                    start_new_session=True,
                )
            )
        # an organisation whose key was never registered cannot join: the run still has exactly three
        rogue_key = tmp_path / "rogue.key"
        rogue_key.write_bytes(
            ec.generate_private_key(ec.SECP384R1()).private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
        )
        clients.append(
            subprocess.Popen(
                _cli(
                    "federated",
                    "client",
                    "--workspace",
                    layout["organisations"][0],
                    "--superlink",
                    ready["superlink"],
                    "--root-certificates",
                    ready["root_certificates"],
                    "--key",
                    str(rogue_key),
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,
            )
        )
        sessions |= {p.pid for p in clients}
        out, err = server.communicate(timeout=600)
        assert server.returncode == 0, err[-3000:]
        result = json.loads(out)
        assert [h["survivors"] for h in result["history"]] == [3, 3]
        assert result["history"][-1]["accuracy"] > 0.6
    finally:
        for p in [*clients, server]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in [*clients, server]:
            p.wait(timeout=60)
    with Workspace.open(layout["server"]) as ws:
        rounds = [decode_event(ws.ledger.entry(i).data) for i in range(ws.ledger.head().size)]
    assert [e.round for e in rounds if e.kind == "federated.round"] == [1, 2]
    for path in layout["organisations"]:
        with Workspace.open(path) as ws:
            events = [decode_event(ws.ledger.entry(i).data) for i in range(ws.ledger.head().size)]
        sent = [e for e in events if e.kind == "federated.update_sent"]
        assert [e.round for e in sent] == [1, 2] and all(e.secure_aggregation for e in sent)
    # only what this test started: its process tree, the sessions it created, anything naming its directory
    deadline = time.monotonic() + 30
    while own_processes([tmp_path], sessions) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert own_processes([tmp_path], sessions) == []
