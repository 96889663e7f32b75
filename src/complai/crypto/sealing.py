"""Sealing to a recipient: X25519 key agreement with an ephemeral key, HKDF-SHA256, then the chunked
AES-256-GCM stream of crypto/stream.py. Only the holder of the recipient's private key can open it;
the header (with the ephemeral public key) is bound to every chunk."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from complai.crypto.keyfiles import read_secret
from complai.crypto.stream import DecryptingReader, EncryptingWriter, read_header
from complai.errors import IntegrityError, InvalidInput
from complai.files import check_output, write_private
from complai.inputs import json_object

PRIVATE_PREFIX = "complai-x25519-private:"
PUBLIC_PREFIX = "complai-x25519-public:"
FORMAT = "complai-sealed/1"


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public: bytes) -> str:
    return hashlib.sha256(b"complai x25519 " + public).hexdigest()[:16]


def generate_keypair(path: Path, forbidden: Iterable[Path] = ()) -> bytes:
    """Write a private key file (0600) at `path` and the public key at `path`.pub, both new files;
    returns the public key."""
    path, pub = Path(path), Path(str(path) + ".pub")
    forbidden = list(forbidden)
    for p in (path, pub):
        check_output(p, forbidden=forbidden)
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    write_private(path, PRIVATE_PREFIX + base64.b64encode(raw).decode() + "\n", forbidden=forbidden)
    public = _raw_public(private.public_key())
    try:
        write_private(pub, PUBLIC_PREFIX + base64.b64encode(public).decode() + "\n", mode=0o644, forbidden=forbidden)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return public


def load_public(text: str) -> bytes:
    text = text.strip()
    if not text.startswith(PUBLIC_PREFIX):
        raise InvalidInput("not a complai X25519 public key (expected a .pub file from `complai share keygen`)")
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX) :], validate=True)
    except ValueError:
        raise InvalidInput("public key is not valid base64") from None
    if len(raw) != 32:
        raise InvalidInput("public key must be 32 bytes")
    return raw


def load_private(path: Path) -> X25519PrivateKey:
    text = read_secret(Path(path)).decode().strip()
    if not text.startswith(PRIVATE_PREFIX):
        raise InvalidInput(f"{path} is not a complai X25519 private key")
    return X25519PrivateKey.from_private_bytes(base64.b64decode(text[len(PRIVATE_PREFIX) :]))


def _derive(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=ephemeral + recipient, info=b"complai/sealed/v1").derive(shared)


def seal_to(out: BinaryIO, recipient_public: bytes, meta: dict[str, Any]) -> EncryptingWriter:
    """Start a sealed stream to the recipient; write plaintext to the returned writer, then close() it."""
    ephemeral = X25519PrivateKey.generate()
    eph_pub = _raw_public(ephemeral.public_key())
    key = _derive(ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public)), eph_pub, recipient_public)
    header = json.dumps(
        {
            "format": FORMAT,
            "ephemeral": base64.b64encode(eph_pub).decode(),
            "recipient": key_id(recipient_public),
            **meta,
        },
        sort_keys=True,
    ).encode()
    return EncryptingWriter(out, key, header)


def open_sealed(src: BinaryIO, private: X25519PrivateKey) -> tuple[dict[str, Any], DecryptingReader]:
    header = read_header(src)
    meta = json_object(header)  # an outsider's bytes: anything but a JSON object is damage
    try:
        if meta is None:
            raise ValueError
        eph_pub = base64.b64decode(meta["ephemeral"], validate=True)
        if len(eph_pub) != 32:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("sealed file header is damaged") from None
    if meta.get("format") != FORMAT:
        raise IntegrityError("not a complai sealed file")
    mine = _raw_public(private.public_key())
    if meta.get("recipient") != key_id(mine):
        raise InvalidInput("this package is sealed to another recipient key")
    key = _derive(private.exchange(X25519PublicKey.from_public_bytes(eph_pub)), eph_pub, mine)
    return meta, DecryptingReader(src, key, header)
