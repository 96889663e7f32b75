"""The building blocks of secure aggregation, all from vetted libraries: X25519 key agreement, HKDF,
AES-256-CTR as the mask generator, AES-256-GCM for share transport, Ed25519 for key signatures,
Shamir secret sharing over GF(2^128) (pycryptodome), and fixed-point quantisation into Z_(2^64)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from complai.errors import InvalidInput

RAW = serialization.Encoding.Raw


class TamperedMessage(Exception):
    """A protocol message failed authentication."""


def kdf(secret: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def x25519_keypair(private: bytes | None = None) -> tuple[X25519PrivateKey, bytes]:
    sk = X25519PrivateKey.generate() if private is None else X25519PrivateKey.from_private_bytes(private)
    return sk, sk.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)


def x25519_private_bytes(sk: X25519PrivateKey) -> bytes:
    return sk.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def agree(sk: X25519PrivateKey | bytes, peer_pk: bytes, info: bytes) -> bytes:
    """A 32-byte key from an X25519 agreement, bound to `info` by HKDF."""
    if isinstance(sk, bytes):
        sk = X25519PrivateKey.from_private_bytes(sk)
    try:
        shared = sk.exchange(X25519PublicKey.from_public_bytes(peer_pk))
    except ValueError:
        raise TamperedMessage("an advertised public key is invalid") from None
    return kdf(shared, info)


def expand(seed: bytes, length: int, info: bytes) -> np.ndarray:
    """`length` pseudorandom uint64 words: AES-256-CTR keyed by HKDF(seed, info), over zeros."""
    key = kdf(seed, b"complai secagg prg|" + info, 48)
    enc = Cipher(algorithms.AES(key[:32]), modes.CTR(key[32:])).encryptor()
    return np.frombuffer(enc.update(bytes(8 * length)) + enc.finalize(), dtype="<u8").copy()


def seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def open_sealed(key: bytes, blob: bytes, ad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], ad)
    except (InvalidTag, ValueError):
        raise TamperedMessage("a sealed share failed authentication") from None


# --- Shamir over GF(2^128) (pycryptodome): 16-byte secrets, or 32 as two halves ---------------------


def share_secret(secret: bytes, threshold: int, holders: int) -> list[bytes]:
    """`holders` shares (index i+1 for holder i) of a 16- or 32-byte secret; any `threshold` recover it."""
    if len(secret) not in (16, 32):
        raise ValueError("secrets are 16 or 32 bytes")
    if not 1 <= threshold <= holders:
        raise ValueError("need 1 <= threshold <= holders")
    if threshold == 1:  # pycryptodome needs k >= 2; a degree-0 polynomial is the secret itself
        return [secret] * holders
    parts = [Shamir.split(threshold, holders, secret[i : i + 16], ssss=False) for i in range(0, len(secret), 16)]
    return [b"".join(p[h][1] for p in parts) for h in range(holders)]


def recover_secret(shares: dict[int, bytes], threshold: int) -> bytes:
    """The secret from `threshold` shares keyed by holder index (0-based)."""
    if len(shares) < threshold:
        raise ValueError("not enough shares")
    chosen = sorted(shares.items())[:threshold]
    if threshold == 1:
        return chosen[0][1]
    size = len(chosen[0][1])
    return b"".join(Shamir.combine([(i + 1, s[j : j + 16]) for i, s in chosen], ssss=False) for j in range(0, size, 16))


# --- fixed-point quantisation -------------------------------------------------------------------------

SCALE_BITS = 32


@dataclass(frozen=True)
class Quantizer:
    """Values clipped to [-bound, bound], mapped to integers 0..2^32-1 (round to nearest), summed mod
    2^64. Exact for up to 2^32 clients; the sum's error per coordinate is at most
    clients * bound / (2^32 - 1) (half a step per client), plus whatever clipping removed."""

    bound: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise InvalidInput("the quantisation bound must be a positive number")

    @property
    def step(self) -> float:
        return 2 * self.bound / ((1 << SCALE_BITS) - 1)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """(encoded words, number of values clipped)."""
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            raise InvalidInput("update contains NaN or infinity")
        clipped = int((np.abs(x) > self.bound).sum())
        y = np.rint((np.clip(x, -self.bound, self.bound) + self.bound) / self.step)
        return y.astype(np.uint64), clipped

    def decode(self, total: np.ndarray, clients: int) -> np.ndarray:
        return total.astype(np.float64) * self.step - clients * self.bound

    def error_bound(self, clients: int) -> float:
        return clients * self.step / 2
