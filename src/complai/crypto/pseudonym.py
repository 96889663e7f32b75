"""Keyed pseudonyms for the ledger: HMAC-SHA256 under a workspace key, so subjects can be named in
events without personal data, and erasure (of the mapping) stays possible while the ledger is immutable."""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymizer:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("pseudonym key must be at least 32 bytes")
        self._key = key

    def subject(self, external_id: str) -> str:
        mac = hmac.new(self._key, b"subject\x00" + external_id.encode("utf-8"), hashlib.sha256)
        return "sp:" + mac.hexdigest()

    def __repr__(self) -> str:
        return "Pseudonymizer(<key hidden>)"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
