"""Content digests as complai writes them in events and manifests: `sha256:` and the hex digest."""

from __future__ import annotations

import hashlib


def digest(data: bytes) -> str:
    """`sha256:<hex>` of the bytes (the form events.Digest accepts)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_text(text: str) -> str:
    """`sha256:<hex>` of the text's UTF-8 bytes."""
    return digest(text.encode("utf-8"))
