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

    def value(self, data: bytes) -> str:
        """A keyed digest of a value, for events that must bind a value without revealing it: a plain
        hash of a low-entropy value (an age, a category) is reversed by trying the candidates."""
        return "hmac-sha256:" + hmac.new(self._key, b"value\x00" + data, hashlib.sha256).hexdigest()

    def link_key(self, dataset: str) -> bytes:
        """The key of an external dataset's links (HMAC of the lake's subject id): derived per dataset,
        so the key the Spark executors see computes neither the ledger's pseudonyms nor another
        dataset's links."""
        return hmac.new(self._key, b"external-link\x00" + dataset.encode("utf-8"), hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "Pseudonymizer(<key hidden>)"
