"""What must arrive byte for byte (a signed note, a witness key, a token) is printed whole on a
narrow terminal too: a note wrapped at the console's width is no longer a valid signed note."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from complai.crypto.signing import VerifierKey
from complai.ledger.checkpoint import verify_note


def narrow(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "30"}
    return subprocess.run(
        [sys.executable, "-m", "complai.cli.main", *args], capture_output=True, text=True, env=env, check=False
    )


def test_a_checkpoint_note_saved_from_a_narrow_terminal_verifies(tmp_path: Path) -> None:
    ws = ["--workspace", str(tmp_path / "ws")]
    assert narrow(*ws, "init").returncode == 0
    witness = narrow("ledger", "witness", "init", str(tmp_path / "w"), "--name", "witness.example.org/w1")
    assert witness.returncode == 0, witness.stderr
    key = VerifierKey.parse(witness.stdout.strip())  # a wrapped key would not parse
    assert key.name == "witness.example.org/w1"
    note = narrow(*ws, "ledger", "checkpoint")
    assert note.returncode == 0, note.stderr
    assert max(len(line) for line in note.stdout.splitlines()) > 30  # the note is wider than the terminal
    status = narrow(*ws, "ledger", "status", "--json")
    log_key = VerifierKey.parse(json.loads(status.stdout)["log_key"])
    assert verify_note(note.stdout, log_key).checkpoint.size >= 1


def test_a_token_is_printed_whole_on_a_narrow_terminal(tmp_path: Path) -> None:
    ws = ["--workspace", str(tmp_path / "ws")]
    assert narrow(*ws, "init").returncode == 0
    token = narrow(*ws, "token", "create")
    assert token.returncode == 0, token.stderr
    lines = token.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cpl_") and len(lines[0]) > 30
    assert narrow(*ws, "--token", lines[0], "ledger", "status").returncode == 0


def test_tables_fold_long_values_instead_of_cutting_them(tmp_path: Path) -> None:
    ws = ["--workspace", str(tmp_path / "ws")]
    assert narrow(*ws, "init").returncode == 0
    root = json.loads(narrow(*ws, "ledger", "status", "--json").stdout)["root"]
    for args in (["ledger", "status"], ["ledger", "show"], ["status"]):
        out = narrow(*ws, *args)
        assert out.returncode == 0, out.stderr
        assert "…" not in out.stdout, args
    shown = narrow(*ws, "ledger", "status").stdout
    assert root in "".join(shown.split())  # the 64-hex root, folded over lines, is all there
