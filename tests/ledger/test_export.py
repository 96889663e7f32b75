"""Offline verification of an exported ledger, with nothing but its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from complai.app.workspace import Workspace
from complai.errors import InvalidInput
from complai.ledger.verify import export_ledger, verify_export
from complai.ledger.witness import Witness
from tests.ledger.helpers import fill


@pytest.fixture
def exported(ws: Workspace, tmp_path: Path) -> Path:
    w = Witness.init(tmp_path / "witness", "w.example")
    ws.ledger.add_witness(w.verifier, ws.clock.now())
    fill(ws.ledger, 50)
    note = ws.ledger.checkpoint()
    sig = w.cosign(note.text(), ws.ledger.verifier, [], 1_760_000_000)
    ws.ledger.store_cosignature(note.checkpoint.size, w.verifier, sig.line(), ws.clock.now())
    fill(ws.ledger, 5)
    out = tmp_path / "export"
    manifest = export_ledger(ws.ledger, out)
    assert manifest["size"] == 58  # created + witness trusted + 50 + the checkpoint's entry + 5
    return out


def test_export_verifies_offline(exported: Path) -> None:
    report = verify_export(exported, quorum=1)
    assert report.ok, report.problem
    assert report.size == 58 and report.witnessed == 1
    assert any("not yet signed" in n for n in report.notes)


def test_export_tampering_is_detected(exported: Path) -> None:
    entries = exported / "entries.jsonl"
    lines = entries.read_bytes().split(b"\n")
    obj = json.loads(lines[10])
    obj["n"] = 424242
    lines[10] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    entries.write_bytes(b"\n".join(lines))
    report = verify_export(exported)
    assert not report.ok and "signed root differs" in (report.problem or "")


def test_export_with_a_dropped_line_fails(exported: Path) -> None:
    entries = exported / "entries.jsonl"
    lines = entries.read_bytes().split(b"\n")
    del lines[3]
    entries.write_bytes(b"\n".join(lines))
    assert not verify_export(exported).ok


def test_export_with_a_forged_checkpoint_fails(exported: Path) -> None:
    note = next((exported / "checkpoints").glob("*.note"))
    text = note.read_text().split("\n")
    text[1] = "3"
    note.write_text("\n".join(text))
    report = verify_export(exported)
    assert not report.ok and "signature" in (report.problem or "")


def test_export_refuses_non_empty_directory_and_incomplete_exports(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InvalidInput, match="not empty"):
        export_ledger(ws.ledger, tmp_path / "full")
    with pytest.raises(InvalidInput, match="not a complete ledger export"):
        verify_export(tmp_path / "nothing-here")
