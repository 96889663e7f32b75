"""Share packages, the recipient's side: open a package sealed by `Agreements.export`, check its data
against its manifest and the share event's inclusion proof in the sender's ledger. Needs no workspace:
only the recipient's private key (and, to pin it, the sender's ledger verifier key)."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from complai.crypto.sealing import load_private, open_sealed
from complai.crypto.signing import VerifierKey
from complai.errors import IntegrityError, InvalidInput
from complai.events import DataShared
from complai.files import check_output_dir, output_dir, write_private
from complai.inputs import json_object, open_input
from complai.ledger import merkle
from complai.ledger.checkpoint import verify_note

PACKAGE_FORMAT = "complai-share/1"


def open_package(
    path: Path,
    private_key_file: Path,
    out_dir: Path,
    log_key: str | None = None,
    forbidden: Iterable[Path] = (),
) -> dict[str, Any]:
    """Recipient side: decrypt, check the data digest and the share event's inclusion proof; the data
    goes to a new or empty folder (mode 0700) as files of mode 0600."""
    out_dir = check_output_dir(out_dir, forbidden=forbidden)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InvalidInput(f"{out_dir} is not empty")
    private = load_private(private_key_file)
    src = open_input(path, "package")  # a regular file: a FIFO or a device is refused, not waited on
    files: dict[str, bytes] = {}
    with src:
        _, reader = open_sealed(src, private)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    if member.name not in ("data.csv", "manifest.json") or not member.isfile():
                        raise IntegrityError(f"package holds an unexpected entry {member.name!r}")
                    fh = tar.extractfile(member)
                    assert fh is not None
                    files[member.name] = fh.read()
        except tarfile.TarError:
            raise IntegrityError("package archive is damaged") from None
    if set(files) != {"data.csv", "manifest.json"}:
        raise IntegrityError("package is incomplete")
    # the sender wrote the manifest: anything but the fields complai writes, of their types, is damage
    manifest = json_object(files["manifest.json"])
    try:
        if manifest is None:
            raise ValueError
        if hashlib.sha256(files["data.csv"]).hexdigest() != manifest["data_sha256"]:
            raise IntegrityError("package data does not match its manifest")
        ledger = manifest["ledger"]
        key = VerifierKey.parse(log_key or ledger["log_key"])
        note = verify_note(ledger["checkpoint"], key)
        event = ledger["event"].encode()
        merkle.verify_inclusion(
            ledger["seq"],
            note.checkpoint.size,
            merkle.leaf_hash(event),
            [bytes.fromhex(p) for p in ledger["proof"]],
            note.checkpoint.root,
        )
        ev = json_object(event)
        if (
            ev is None
            or ev.get("type") != DataShared.kind
            or ev.get("data_digest") != "sha256:" + manifest["data_sha256"]
        ):
            raise IntegrityError("the ledger event does not describe this data")
        summary = {
            "rows": int(manifest["rows"]),
            "fields": list(manifest["fields"]),
            "agreement": str(manifest["agreement"]["id"]),
        }
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        raise IntegrityError("package manifest is damaged") from None
    output_dir(out_dir, forbidden=forbidden)
    written: list[Path] = []
    try:
        for name in ("data.csv", "manifest.json"):
            written.append(write_private(out_dir / name, files[name], forbidden=forbidden))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return {
        **summary,
        "ledger_seq": ledger["seq"],
        "verified_against_pinned_key": bool(log_key),
    }
