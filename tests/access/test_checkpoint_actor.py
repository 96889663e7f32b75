"""A checkpoint recorded in the ledger names who caused it: the exporter of a shared package, the
principal running `ledger checkpoint` or `ledger prove`, never a default owner."""

from __future__ import annotations

from pathlib import Path

from complai.app.workspace import Workspace
from complai.crypto.sealing import generate_keypair
from complai.events import decode_event
from tests.cli.test_authn import cli, token_for


def _checkpoint_actors(ws: Workspace, start: int = 0) -> list[str]:
    return [decode_event(e.data).actor for e in ws.ledger.entries(start=start, kind="ledger.checkpoint")]


def test_a_share_export_checkpoint_names_the_exporter(customers: Workspace, tmp_path: Path) -> None:
    public = generate_keypair(tmp_path / "bank.key")
    customers.identity.add("owner", "sharer", "service")
    customers.policy.add("owner", "sharer", "customers", "share", "credit_scoring")
    a = customers.agreements.create(
        "owner", "bank", public, "customers", "credit_scoring", ["income"], recipient_jurisdiction="EU"
    )
    before = customers.ledger.head().size
    customers.agreements.export("sharer", a.id, tmp_path / "p.pkg")
    assert _checkpoint_actors(customers, before) == ["sharer"]


def test_ledger_checkpoint_and_prove_name_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "ws"
    with Workspace.init(path) as w:
        w.identity.add("owner", "aud", "service")
        w.identity.grant_role("owner", "aud", "auditor")
    aud = token_for(path, "aud")
    before = Workspace.open(path)
    start = before.ledger.head().size
    before.close()
    r = cli("--workspace", str(path), "--token", aud, "ledger", "prove", "0")  # signs a checkpoint first
    assert r.returncode == 0, r.stderr
    with Workspace.open(path) as w:
        w.identity.add("owner", "ana", "service")  # something new to checkpoint
    r = cli("--workspace", str(path), "--token", aud, "ledger", "checkpoint")
    assert r.returncode == 0, r.stderr
    with Workspace.open(path) as w:
        assert _checkpoint_actors(w, start) == ["aud", "aud"]
