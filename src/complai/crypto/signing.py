"""Ed25519 signing keys and C2SP signed-note key names, IDs and verifier keys.

Key ID = SHA-256(name || "\\n" || alg || public key)[:4]; alg 0x01 for note signatures (Ed25519),
0x04 for tlog cosignatures (cosignature/v1). Verifier key = name+hex(key ID)+base64(alg || public key).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from complai.crypto.keyfiles import read_secret, write_secret
from complai.errors import InvalidInput

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04


def key_id(name: str, alg: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]


def _check_name(name: str) -> str:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise InvalidInput(f"key name {name!r} must be non-empty with no spaces or '+'")
    return name


@dataclass(frozen=True)
class VerifierKey:
    """A public key with its name and algorithm, as written in a C2SP vkey string."""

    name: str
    alg: int
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.alg, self.public)

    def encode(self) -> str:
        blob = base64.b64encode(bytes([self.alg]) + self.public).decode()
        return f"{self.name}+{self.id.hex()}+{blob}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise InvalidInput("verifier key must look like NAME+KEYID+BASE64")
        name, hexid, blob = parts
        try:
            raw = base64.b64decode(blob, validate=True)
            kid = bytes.fromhex(hexid)
        except ValueError:
            raise InvalidInput("verifier key is not valid hex/base64") from None
        if len(raw) != 33 or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise InvalidInput("verifier key is not an Ed25519 note or cosignature key")
        vk = cls(_check_name(name), raw[0], raw[1:])
        if vk.id != kid:
            raise InvalidInput("verifier key ID does not match its name and public key")
        return vk

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Signer:
    """An Ed25519 private key with a name, used for checkpoints and cosignatures."""

    def __init__(self, name: str, private: Ed25519PrivateKey, alg: int = ALG_ED25519) -> None:
        self.name = _check_name(name)
        self._key = private
        self.alg = alg
        self.public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls, name: str, alg: int = ALG_ED25519) -> Signer:
        return cls(name, Ed25519PrivateKey.generate(), alg)

    @classmethod
    def load(cls, path: Path, name: str, alg: int = ALG_ED25519) -> Signer:
        return cls(name, Ed25519PrivateKey.from_private_bytes(read_secret(path, size=32)), alg)

    def save(self, path: Path) -> None:
        write_secret(path, self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, self.alg, self.public)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def derive_key(self, info: bytes) -> bytes:
        """A 32-byte secret for another use of this key's holder (HKDF-SHA256 over the private key,
        separated by `info`), e.g. to authenticate state the log key's holder keeps in the store."""
        raw = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"complai/derived-key/v1", info=info).derive(raw)

    def __repr__(self) -> str:  # never print key material
        return f"Signer(name={self.name!r}, id={self.verifier.id.hex()})"
