"""A witness: an independent party that cosigns a log's checkpoints only after checking that each new
checkpoint is consistent with the last one it cosigned. It keeps its own key and state in its own
directory, so a log operator who rewrites history cannot get it cosigned."""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TypedDict

from complai.crypto.signing import ALG_COSIGNATURE_V1, Signer, VerifierKey
from complai.errors import AlreadyExists, IntegrityError, WorkspaceError
from complai.ledger import merkle
from complai.ledger.checkpoint import NoteSignature, cosign, verify_note
from complai.ledger.log import Ledger


class _Cosigned(TypedDict):
    """What a witness keeps per log: the size and root (base64) of the last checkpoint it cosigned."""

    size: int
    root: str


KEY_FILE = "witness.key"
STATE_FILE = "witness.json"


class Witness:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        try:
            state = json.loads((self.dir / STATE_FILE).read_text())
        except FileNotFoundError:
            raise WorkspaceError(f"no witness at {self.dir}") from None
        except ValueError:
            raise WorkspaceError(f"witness state at {self.dir} is corrupt") from None
        self.name: str = state["name"]
        self._logs: dict[str, _Cosigned] = state.get("logs", {})
        self._signer = Signer.load(self.dir / KEY_FILE, self.name, ALG_COSIGNATURE_V1)

    @classmethod
    def init(cls, directory: Path, name: str) -> Witness:
        directory = Path(directory)
        if (directory / STATE_FILE).exists():
            raise AlreadyExists(f"a witness already exists at {directory}")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        Signer.generate(name, ALG_COSIGNATURE_V1).save(directory / KEY_FILE)
        cls._write_state(directory, {"name": name, "logs": {}})
        return cls(directory)

    @staticmethod
    def _write_state(directory: Path, state: dict[str, object]) -> None:
        tmp = directory / (STATE_FILE + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # 0600 whatever the umask: a witness whose state others could roll back would cosign a fork
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / STATE_FILE)

    @property
    def verifier(self) -> VerifierKey:
        return self._signer.verifier

    def last_cosigned(self, origin: str) -> tuple[int, bytes] | None:
        entry = self._logs.get(origin)
        if not entry:
            return None
        return int(entry["size"]), base64.b64decode(str(entry["root"]))

    def cosign(self, note_text: str, log_key: VerifierKey, proof: Sequence[bytes], timestamp: int) -> NoteSignature:
        """Cosign a checkpoint after verifying the log's signature and consistency with the last one.

        `proof` is the consistency proof from the last cosigned size to the new size (empty the first
        time this witness sees the log). Raises IntegrityError and signs nothing if any check fails.
        """
        note = verify_note(note_text, log_key)
        cp = note.checkpoint
        last = self.last_cosigned(cp.origin)
        if last is not None and last[0] > 0:
            old_size, old_root = last
            if cp.size < old_size:
                raise IntegrityError(
                    f"witness {self.name}: checkpoint size {cp.size} is smaller than the cosigned {old_size}"
                )
            try:
                merkle.verify_consistency(old_size, cp.size, old_root, cp.root, proof)
            except merkle.ProofError as exc:
                raise IntegrityError(
                    f"witness {self.name}: checkpoint {cp.size} is not consistent with cosigned {old_size}: {exc}"
                ) from None
        sig = cosign(cp, self._signer, timestamp)
        self._logs[cp.origin] = {"size": cp.size, "root": base64.b64encode(cp.root).decode()}
        self._write_state(self.dir, {"name": self.name, "logs": self._logs})
        return sig


def cosign_latest(ledger: Ledger, witness: Witness, when: datetime, timestamp: int) -> tuple[int, str] | None:
    """Have `witness` check the ledger's latest checkpoint (consistent with what it cosigned before) and
    cosign it; the cosignature is stored when the ledger trusts the witness. (checkpoint size,
    cosignature line), or None when there is no checkpoint."""
    note = ledger.latest_checkpoint()
    if note is None:
        return None
    last = witness.last_cosigned(note.checkpoint.origin)
    proof: list[bytes] = []
    if last is not None and 0 < last[0] <= note.checkpoint.size:
        proof = ledger.consistency_proof(last[0], note.checkpoint.size)
    sig = witness.cosign(note.text(), ledger.verifier, proof, timestamp)
    trusted = {k.name: k for k in ledger.witnesses()}
    if witness.name in trusted and trusted[witness.name] == witness.verifier:
        ledger.store_cosignature(note.checkpoint.size, witness.verifier, sig.line(), when)
    return int(note.checkpoint.size), sig.line()
