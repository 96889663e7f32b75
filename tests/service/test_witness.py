"""The witness's own HTTP app (C2SP tlog-witness add-checkpoint): it cosigns consistent checkpoints,
answers 409 with its size, refuses forks, bad proofs, unknown logs and bad signatures, keeps its state
0600; once as a real process, with the log side (`complai witness submit`) collecting the cosignature."""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.crypto.signing import Signer
from complai.errors import InvalidInput
from complai.ledger.checkpoint import Checkpoint, parse_note, sign_checkpoint, verify_cosignature
from complai.ledger.witness import Witness
from complai.service.witness import create_witness_app, parse_logs, parse_request, witness_dir
from tests.cli.test_authn import cli
from tests.ledger.helpers import fill

NAME = "witness.example/w1"


def body(old: int, proof: list[bytes], note: str) -> bytes:
    return (f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note).encode()


@pytest.fixture
def witness(tmp_path: Path) -> Witness:
    return Witness.init(tmp_path / "witness", NAME)


@pytest.fixture
def wclient(ws: Workspace, witness: Witness) -> Iterator[TestClient]:
    app = create_witness_app(witness.dir, {ws.ledger.origin: ws.ledger.verifier})
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def checkpoint(ws: Workspace, more: int = 5) -> str:
    fill(ws.ledger, more)
    return ws.session("owner", "audit").ledger_checkpoint().text()


def test_cosigns_a_consistent_history_and_the_log_keeps_it(
    ws: Workspace, witness: Witness, wclient: TestClient
) -> None:
    note1 = checkpoint(ws)
    # whatever the Content-Type, the body is read as the protocol's text
    r = wclient.post("/add-checkpoint", content=body(0, [], note1), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    line = r.text
    cp1 = parse_note(note1).checkpoint
    sig = parse_note(note1 + line).signatures[-1]
    assert sig.name == NAME and verify_cosignature(cp1, sig, witness.verifier)
    # the log side: trust the witness and keep its cosignature; a quorum of one then verifies
    owner = ws.session("owner", "security")
    owner.trust_witness(witness.verifier)
    ws.session("owner", "audit").ledger_add_cosignature(cp1.size, line)
    assert ws.session("owner", "audit").ledger_verify(quorum=1).witnessed >= 1
    # the same checkpoint again: fine (same size, same root), no proof needed
    assert wclient.post("/add-checkpoint", content=body(cp1.size, [], note1)).status_code == 200
    # a newer one: 409 with the size the witness knows, then with the consistency proof
    note2 = checkpoint(ws)
    cp2 = parse_note(note2).checkpoint
    r = wclient.post("/add-checkpoint", content=body(0, [], note2))
    assert r.status_code == 409 and r.headers["content-type"].startswith("text/x.tlog.size")
    assert r.text == f"{cp1.size}\n"
    proof = ws.ledger.consistency_proof(cp1.size, cp2.size)
    assert wclient.post("/add-checkpoint", content=body(cp1.size, proof, note2)).status_code == 200
    state = witness.dir / "witness.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert Witness(witness.dir).last_cosigned(cp2.origin) == (cp2.size, cp2.root)
    # an older one is a rollback: 409 (the witness is ahead)
    assert wclient.post("/add-checkpoint", content=body(cp1.size, [], note1)).status_code == 409


def test_refuses_a_fork_and_a_bad_proof(ws: Workspace, witness: Witness, wclient: TestClient) -> None:
    note1 = checkpoint(ws)
    cp1 = parse_note(note1).checkpoint
    assert wclient.post("/add-checkpoint", content=body(0, [], note1)).status_code == 200
    signer = ws.ledger.signer  # the log's own key signs a rewritten history (a fork)
    fork_same = sign_checkpoint(Checkpoint(cp1.origin, cp1.size, bytes(32)), signer).text()
    r = wclient.post("/add-checkpoint", content=body(cp1.size, [], fork_same))
    assert r.status_code == 409 and "fork" in r.text
    note2 = checkpoint(ws)
    cp2 = parse_note(note2).checkpoint
    proof = ws.ledger.consistency_proof(cp1.size, cp2.size)
    fork_later = sign_checkpoint(Checkpoint(cp1.origin, cp2.size, bytes(32)), signer).text()
    assert wclient.post("/add-checkpoint", content=body(cp1.size, proof, fork_later)).status_code == 422
    bent = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    assert wclient.post("/add-checkpoint", content=body(cp1.size, bent, note2)).status_code == 422
    assert wclient.post("/add-checkpoint", content=body(cp1.size, proof[:-1], note2)).status_code == 422
    assert Witness(witness.dir).last_cosigned(cp1.origin) == (cp1.size, cp1.root)  # nothing moved
    assert wclient.post("/add-checkpoint", content=body(cp1.size, proof, note2)).status_code == 200


def test_refuses_unknown_logs_bad_signatures_and_malformed_requests(ws: Workspace, wclient: TestClient) -> None:
    note = checkpoint(ws)
    cp = parse_note(note).checkpoint
    stranger = Signer.generate("other.example/log")
    other = sign_checkpoint(Checkpoint("other.example/log", cp.size, cp.root), stranger).text()
    assert wclient.post("/add-checkpoint", content=body(0, [], other)).status_code == 404
    impostor = Signer.generate(ws.ledger.origin)  # the log's name, another key
    forged = sign_checkpoint(cp, impostor).text()
    assert wclient.post("/add-checkpoint", content=body(0, [], forged)).status_code == 403
    assert wclient.post("/add-checkpoint", content=body(cp.size + 1, [], note)).status_code == 400
    for bad in (b"old 01\n\n" + note.encode(), b"new 0\n\n" + note.encode(), b"old 0\nnot-base64!\n\n" + note.encode()):
        assert wclient.post("/add-checkpoint", content=bad).status_code == 400, bad[:20]
    assert (
        wclient.post("/add-checkpoint", content=b"old 0\n" + note.encode().replace(b"\n\n", b"\n")).status_code == 400
    )
    assert wclient.post("/add-checkpoint", content=b"\xff\xfe").status_code == 400
    assert wclient.post("/add-checkpoint", content=b"old 0\n" * 20000).status_code == 413
    assert wclient.post("/add-checkpoint", content=body(0, [bytes(32)], note)).status_code == 422


def test_every_answer_carries_the_security_headers(
    ws: Workspace, witness: Witness, wclient: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = {
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    }
    note = checkpoint(ws)
    answers = [
        wclient.get("/"),
        wclient.post("/add-checkpoint", content=body(0, [], note)),  # cosigned
        wclient.post("/add-checkpoint", content=body(0, [], note)),  # 409: it knows the size now
        wclient.post("/add-checkpoint", content=b"not a request"),  # 400
        wclient.get("/no-such-page"),  # 404
    ]
    assert [r.status_code for r in answers] == [200, 200, 409, 400, 404]

    def boom(*_: object) -> str:
        raise RuntimeError("a message that must not be shown")

    monkeypatch.setattr(wclient.app.state.witness, "add_checkpoint", boom)  # type: ignore[attr-defined]
    failed = wclient.post("/add-checkpoint", content=body(0, [], note))
    assert failed.status_code == 500 and "must not be shown" not in failed.text
    for r in [*answers, failed]:
        for header, value in wanted.items():
            assert r.headers.get(header) == value, (r.request.url, header)
        assert "default-src" in r.headers["content-security-policy"]
        assert "strict-transport-security" not in r.headers  # plain HTTP


def test_arguments() -> None:
    with pytest.raises(InvalidInput, match="ORIGIN=VKEY"):
        parse_logs(["no-equals-sign"])
    with pytest.raises(InvalidInput, match="at least one"):
        parse_logs([])
    with pytest.raises(InvalidInput, match=r"witness\.key"):
        witness_dir(Path("/tmp/some.key"))
    assert parse_request(b"old 3\n" + base64.b64encode(bytes(32)) + b"\n\nnote") == (3, [bytes(32)], "note")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_real_witness_process_and_the_log_collecting_its_cosignature(ws: Workspace, witness: Witness) -> None:
    checkpoint(ws)
    port = _free_port()
    log = f"{ws.ledger.origin}={ws.ledger.verifier.encode()}"
    cmd = [sys.executable, "-m", "complai.cli.main", "witness", "serve", "--key", str(witness.dir / "witness.key")]
    proc = subprocess.Popen(
        [*cmd, "--log", log, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "COMPLAI_WORKSPACE": str(witness.dir.parent / "no-workspace")},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                with urllib.request.urlopen(url + "/", timeout=1) as r:  # noqa: S310 - our own http URL
                    assert NAME in r.read().decode()
                    # no server banner; the service's security headers
                    assert r.headers.get("server") is None
                    assert r.headers.get("x-content-type-options") == "nosniff"
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.1)
        # untrusted here: the line is shown, not kept
        r = cli("-w", str(ws.path), "witness", "submit", url + "/add-checkpoint")
        assert r.returncode == 0, r.stderr
        assert "not stored" in r.stdout and f"\u2014 {NAME} " in r.stdout
        ws.session("owner", "security").trust_witness(witness.verifier)
        checkpoint(ws)  # a newer checkpoint: the witness answers 409 first, then gets the proof
        r = cli("-w", str(ws.path), "witness", "submit", url + "/add-checkpoint")
        assert r.returncode == 0, r.stderr
        latest = ws.session("owner", "audit").ledger_checkpoints()[-1]
        assert [s.name for s in latest.signatures] == [ws.ledger.origin, NAME]
        assert ws.session("owner", "audit").ledger_verify(quorum=1).ok
        r = cli("-w", str(ws.path), "witness", "submit", f"http://127.0.0.1:{_free_port()}/add-checkpoint")
        assert r.returncode == 2 and "cannot reach" in r.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
