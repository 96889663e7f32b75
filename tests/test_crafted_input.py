"""Input an outsider crafts: YAML nested past the parser's recursion limit, and sealed or backup files
whose header is not the JSON object complai wrote (a list, a number, deep nesting, a bad key). Each is a
one-line refusal (InvalidInput or IntegrityError, exit 2), never an internal error, and nothing is written."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from complai.crypto.sealing import generate_keypair, load_private, open_sealed
from complai.errors import IntegrityError, InvalidInput
from complai.inputs import json_object, parse_yaml
from complai.vault.backup import read_backup
from tests.cli.test_output_files import cli

DEEP = "a: " + "[" * 50_000 + "]" * 50_000 + "\n"
HEADERS = [b"[]", b"5", b"null", b"[" * 100_000 + b"]" * 100_000, b'{"ephemeral": 5}', b'{"ephemeral": "AAAA"}']


def _framed(header: bytes) -> bytes:
    return struct.pack(">I", len(header)) + header + b"\0" * 64


def test_deeply_nested_yaml_is_refused() -> None:
    with pytest.raises(InvalidInput, match="nested too deeply"):
        parse_yaml(DEEP, "spec")
    assert json_object(b"[" * 100_000 + b"]" * 100_000) is None
    assert json_object(b"[]") is None and json_object(b'{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("argv", [["train", "{f}"], ["dataset", "create", "d", "--schema", "{f}"]])
def test_deep_yaml_files_are_one_line_refusals(tmp_path: Path, argv: list[str]) -> None:
    from complai.app.workspace import Workspace

    ws = tmp_path / "ws"
    Workspace.init(ws).close()
    spec = tmp_path / "deep.yaml"
    spec.write_text(DEEP)
    assert cli(ws, *[a.format(f=spec) for a in argv]) == 2


@pytest.mark.parametrize("header", HEADERS, ids=["list", "number", "null", "deep", "int-key", "short-key"])
def test_a_crafted_sealed_header_is_damage(tmp_path: Path, header: bytes) -> None:
    generate_keypair(tmp_path / "r.key")
    with pytest.raises(IntegrityError, match="damaged"):
        open_sealed(io.BytesIO(_framed(header)), load_private(tmp_path / "r.key"))


@pytest.mark.parametrize("header", HEADERS[:4], ids=["list", "number", "null", "deep"])
def test_a_crafted_backup_header_is_damage(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "evil.cbk"
    path.write_bytes(_framed(header))
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(IntegrityError, match="damaged"):
        read_backup(path, b"k" * 32, into)
    assert list(into.iterdir()) == []


@pytest.mark.parametrize("edit", ["deep entry", "entries folder", "binary note", "binary key"])
def test_a_crafted_ledger_export_is_refused_or_fails_verification(tmp_path: Path, edit: str) -> None:
    from complai.app.workspace import Workspace
    from complai.ledger.verify import export_ledger, verify_export

    w = Workspace.init(tmp_path / "ws")
    try:
        w.ledger.checkpoint()
        export_ledger(w.ledger, tmp_path / "export")
    finally:
        w.close()
    d = tmp_path / "export"
    assert verify_export(d).ok
    if edit == "deep entry":
        (d / "entries.jsonl").write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
        assert not verify_export(d).ok
        return
    if edit == "entries folder":
        (d / "entries.jsonl").unlink()
        (d / "entries.jsonl").mkdir()
    elif edit == "binary note":
        next((d / "checkpoints").glob("*.note")).write_bytes(b"\xff\xfe")
    else:
        (d / "keys" / "log.vkey").write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidInput, match="not a complete ledger export"):
        verify_export(d)


@pytest.mark.parametrize(
    "manifest",
    [b"[]", b"[" * 100_000 + b"]" * 100_000, b"not json", b'{"data_sha256": 5}', b'{"ledger": []}'],
    ids=["list", "deep", "text", "int-digest", "no-digest"],
)
def test_a_package_with_a_crafted_manifest_is_damage(tmp_path: Path, manifest: bytes) -> None:
    import tarfile

    from complai.access.agreements import open_package
    from complai.crypto.sealing import seal_to

    public = generate_keypair(tmp_path / "r.key")
    package = tmp_path / "evil.pkg"
    with open(package, "wb") as fh:
        writer = seal_to(fh, public, {"agreement": "x"})
        with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]
            for name, blob in (("data.csv", b"a\n1\n"), ("manifest.json", manifest)):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        writer.close()
    with pytest.raises(IntegrityError, match=r"damaged|does not match"):
        open_package(package, tmp_path / "r.key", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_fifo_is_not_a_package(tmp_path: Path) -> None:
    import os

    from complai.access.agreements import open_package

    generate_keypair(tmp_path / "r.key")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InvalidInput, match="FIFO"):
        open_package(tmp_path / "fifo", tmp_path / "r.key", tmp_path / "out")
