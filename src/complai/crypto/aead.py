"""Key-committing AES-256-GCM for records.

AES-GCM is not key-committing: a ciphertext can be crafted to decrypt validly under two keys. We bind
each ciphertext to its key with a commitment tag, as the AWS Encryption SDK does: from a data key K we
derive an encryption key and a commitment key with HKDF-Expand (RFC 5869, SHA-512, one 64-byte
block; K is uniformly random, so Extract is skipped), and store C = HMAC-SHA256(commitment key, "commit")
beside the ciphertext. Decryption recomputes C in constant time before touching AES-GCM; under another
key C differs, so the ciphertext is refused, and finding two keys with the same C means breaking
HMAC-SHA256. C is the same for every ciphertext of one key (it says which ciphertexts share a key, which
the records table already says through its subject column), so it is computed once per key.

Blob layout: version (1) || nonce (12) || C (32) || AES-GCM ciphertext and tag. Nonces are random
96-bit values; the keyring counts encryptions per key and changes keys long before 2^32 (NIST SP
800-38D) — see keyring.MAX_ENCRYPTIONS.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from complai.errors import IntegrityError

VERSION = 1
NONCE = 12
COMMIT = 32
OVERHEAD = 1 + NONCE + COMMIT + 16
_HEADER = bytes([VERSION])


def _expand(key: bytes) -> tuple[bytes, bytes]:
    """HKDF-Expand with SHA-512 (PRK=key, info="complai/aead/v1", L=64): one HMAC block, split into
    the encryption key and the commitment key."""
    okm = hmac.digest(key, b"complai/aead/v1\x01", hashlib.sha512)
    return okm[:32], okm[32:]


class DataKey:
    """A 256-bit data key ready to seal and open; never printed."""

    __slots__ = ("_aead", "_tag")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("data keys are 32 bytes")
        enc, commit = _expand(key)
        self._aead = AESGCM(enc)
        self._tag = hmac.digest(commit, b"commit", hashlib.sha256)

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return _HEADER + nonce + self._tag + self._aead.encrypt(nonce, plaintext, associated_data)

    def open(self, blob: bytes, associated_data: bytes) -> bytes:
        if len(blob) < OVERHEAD or blob[0] != VERSION:
            raise IntegrityError("ciphertext is malformed or of an unknown version")
        nonce = blob[1 : 1 + NONCE]
        tag = blob[1 + NONCE : 1 + NONCE + COMMIT]
        if not hmac.compare_digest(tag, self._tag):
            raise IntegrityError("ciphertext was not made with this key")
        try:
            return self._aead.decrypt(nonce, blob[1 + NONCE + COMMIT :], associated_data)
        except InvalidTag:
            raise IntegrityError("ciphertext failed authentication (tampered, or bound to other data)") from None

    def __repr__(self) -> str:
        return "DataKey(<hidden>)"
