"""Checkpoints as C2SP signed notes (c2sp.org/tlog-checkpoint, c2sp.org/signed-note) and
witness cosignatures (c2sp.org/tlog-cosignature, cosignature/v1 with Ed25519)."""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from complai.crypto.signing import ALG_COSIGNATURE_V1, ALG_ED25519, Signer, VerifierKey
from complai.errors import IntegrityError

DASH = "\u2014"  # signature lines start with an em dash and a space


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    blob: bytes  # signature bytes after the key ID (timestamp || sig for cosignatures)

    def line(self) -> str:
        return f"{DASH} {self.name} {base64.b64encode(self.key_id + self.blob).decode()}\n"


@dataclass(frozen=True)
class SignedNote:
    checkpoint: Checkpoint
    signatures: tuple[NoteSignature, ...]

    def text(self) -> str:
        return self.checkpoint.body().decode() + "\n" + "".join(s.line() for s in self.signatures)

    def with_signature(self, sig: NoteSignature) -> SignedNote:
        if any(s.name == sig.name and s.key_id == sig.key_id for s in self.signatures):
            return self
        return SignedNote(self.checkpoint, (*self.signatures, sig))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> SignedNote:
    if signer.alg != ALG_ED25519:
        raise ValueError("checkpoints are signed with an Ed25519 note key")
    sig = signer.sign(checkpoint.body())
    return SignedNote(checkpoint, (NoteSignature(signer.name, signer.verifier.id, sig),))


def parse_note(text: str) -> SignedNote:
    """Parse a signed checkpoint note; IntegrityError if it is malformed (signatures not checked)."""
    if "\n\n" not in text:
        raise IntegrityError("checkpoint note has no signature block")
    body, sigblock = text.split("\n\n", 1)
    lines = body.split("\n")
    if len(lines) < 3:
        raise IntegrityError("checkpoint has fewer than three lines")
    origin, size_s, root_s, *ext = lines
    if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
        raise IntegrityError("checkpoint size is not a decimal number")
    try:
        root = base64.b64decode(root_s, validate=True)
    except ValueError:
        raise IntegrityError("checkpoint root is not base64") from None
    if len(root) != 32:
        raise IntegrityError("checkpoint root is not 32 bytes")
    sigs: list[NoteSignature] = []
    if not sigblock.endswith("\n"):
        raise IntegrityError("signature block must end with a newline")
    for line in sigblock[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise IntegrityError("malformed signature line in checkpoint note")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError:
            raise IntegrityError("signature is not base64") from None
        if len(raw) < 5:
            raise IntegrityError("signature too short")
        sigs.append(NoteSignature(parts[1], raw[:4], raw[4:]))
    return SignedNote(Checkpoint(origin, int(size_s), root, tuple(ext)), tuple(sigs))


def verify_note(text: str, log_key: VerifierKey) -> SignedNote:
    """Parse the note and check the log's signature; IntegrityError unless it verifies."""
    note = parse_note(text)
    for sig in note.signatures:
        if sig.name == log_key.name and sig.key_id == log_key.id:
            if log_key.verify(sig.blob, note.checkpoint.body()):
                return note
            raise IntegrityError(f"checkpoint at size {note.checkpoint.size}: log signature is invalid")
    raise IntegrityError(f"checkpoint at size {note.checkpoint.size}: not signed by the log key {log_key.name}")


def log_signature_digest(note: SignedNote, log_key: VerifierKey) -> str | None:
    """Digest of the log key's signature line on the note (what a ledger.checkpoint entry records);
    None when the note carries no signature by that key."""
    for sig in note.signatures:
        if sig.name == log_key.name and sig.key_id == log_key.id:
            return "sha256:" + hashlib.sha256(sig.line().encode()).hexdigest()
    return None


def cosignature_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + checkpoint.body()


def cosign(checkpoint: Checkpoint, signer: Signer, timestamp: int) -> NoteSignature:
    if signer.alg != ALG_COSIGNATURE_V1:
        raise ValueError("cosignatures use a cosignature/v1 key")
    sig = signer.sign(cosignature_message(checkpoint, timestamp))
    return NoteSignature(signer.name, signer.verifier.id, struct.pack(">Q", timestamp) + sig)


def verify_cosignature(checkpoint: Checkpoint, sig: NoteSignature, key: VerifierKey) -> bool:
    if key.alg != ALG_COSIGNATURE_V1 or sig.name != key.name or sig.key_id != key.id or len(sig.blob) != 72:
        return False
    (timestamp,) = struct.unpack(">Q", sig.blob[:8])
    if timestamp >= 1 << 63:
        return False
    return key.verify(sig.blob[8:], cosignature_message(checkpoint, timestamp))


def witnessed_by(note: SignedNote, witnesses: list[VerifierKey]) -> list[str]:
    """Names of the trusted witnesses whose cosignature on this note verifies."""
    names = []
    for key in witnesses:
        if any(verify_cosignature(note.checkpoint, s, key) for s in note.signatures):
            names.append(key.name)
    return names
