"""Operators: what to do with each finding, separate from finding it (as in Presidio).

- redact: remove the value; replace: `<ENTITY>`; mask: all but the last four characters become `*`;
- hash: a keyed pseudonym (HMAC-SHA256 under a workspace key): the same value gives the same
  pseudonym across documents and datasets, and nobody without the key can test a guess;
- tokenize: reversible, deterministic AES-SIV (RFC 5297) under a workspace key, bound to the entity
  type; `detokenize` restores the exact text (findings are made non-overlapping first, so overlapping
  detections round-trip too, unlike Presidio's default conflict strategy);
- date_shift: moves a date by a secret per-subject offset (HMAC of the subject), keeping its format,
  so intervals within one subject's data survive;
- generalize: dates to their year, numbers to a bucket of a given width.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from complai.deid.recognizers import Finding, resolve
from complai.errors import InvalidInput

OPERATORS = ("redact", "replace", "mask", "hash", "tokenize", "date_shift", "generalize")
_TOKEN = re.compile(r"\[\[tok:([A-Z_]+):([A-Za-z0-9_-]+)\]\]")
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%B %d, %Y", "%b %d, %Y", "%d %b %Y", "%d %B %Y")


def derive(workspace_key: bytes, purpose: bytes, length: int = 32) -> bytes:
    return HKDF(hashes.SHA256(), length, salt=None, info=b"complai/deid/" + purpose).derive(workspace_key)


@dataclass(frozen=True)
class Keys:
    """Operator keys derived from the workspace's pseudonym key; never printed."""

    pseudonym: bytes
    token: bytes
    date_shift: bytes

    @classmethod
    def from_workspace_key(cls, key: bytes) -> Keys:
        return cls(derive(key, b"pseudonym"), derive(key, b"tokenize", 64), derive(key, b"date-shift"))

    def __repr__(self) -> str:
        return "Keys(<hidden>)"


@dataclass(frozen=True)
class Change:
    start: int
    end: int
    entity: str
    operator: str
    replacement: str


def _parse_date(value: str) -> tuple[datetime, str] | None:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt), fmt
        except ValueError:
            continue
    return None


class Anonymizer:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._siv = AESSIV(keys.token)

    def pseudonym(self, entity: str, value: str) -> str:
        mac = hmac.digest(self.keys.pseudonym, entity.encode() + b"\x00" + value.encode(), hashlib.sha256)
        return f"<{entity}_{mac.hex()[:12]}>"

    def token(self, entity: str, value: str) -> str:
        sealed = self._siv.encrypt(value.encode(), [entity.encode()])
        return f"[[tok:{entity}:{base64.urlsafe_b64encode(sealed).decode().rstrip('=')}]]"

    def date_offset(self, subject: str) -> int:
        """Days in [-180, 180], secret and stable per subject."""
        return (
            int.from_bytes(hmac.digest(self.keys.date_shift, subject.encode(), hashlib.sha256)[:4], "big") % 361 - 180
        )

    def apply(self, operator: str, entity: str, value: str, subject: str = "", bucket: int = 10) -> str:
        if operator == "redact":
            return ""
        if operator == "replace":
            return f"<{entity}>"
        if operator == "mask":
            # the last four digits of a long number stay readable (as on receipts); nothing else does
            keep = 4 if sum(ch.isdigit() for ch in value) >= 8 else 0
            return (
                "".join("*" if ch.isalnum() else ch for ch in value[: len(value) - keep]) + value[len(value) - keep :]
            )
        if operator == "hash":
            return self.pseudonym(entity, value)
        if operator == "tokenize":
            return self.token(entity, value)
        if operator in ("date_shift", "generalize") and entity == "DATE_TIME":
            parsed = _parse_date(value)
            if parsed is None:
                return f"<{entity}>"
            when, fmt = parsed
            if operator == "generalize":
                return str(when.year)
            return (when + timedelta(days=self.date_offset(subject))).strftime(fmt)
        if operator == "generalize":
            digits = re.sub(r"[^\d.]", "", value)
            try:
                number = float(digits)
            except ValueError:
                return f"<{entity}>"
            lo = int(number // bucket * bucket)
            return f"{lo}-{lo + bucket - 1}"
        if operator == "date_shift":
            return f"<{entity}>"
        raise InvalidInput(f"unknown operator {operator!r} (operators: {', '.join(OPERATORS)})")

    def anonymize(
        self,
        text: str,
        findings: Sequence[Finding],
        operators: dict[str, str] | None = None,
        default: str = "replace",
        subject: str = "",
    ) -> tuple[str, list[Change]]:
        """Apply an operator per entity type (else `default`) to the non-overlapping findings."""
        for op in [default, *(operators or {}).values()]:
            if op not in OPERATORS:
                raise InvalidInput(f"unknown operator {op!r} (operators: {', '.join(OPERATORS)})")
        changes = []
        out = []
        pos = 0
        for f in resolve(findings):
            op = (operators or {}).get(f.entity, default)
            replacement = self.apply(op, f.entity, text[f.start : f.end], subject)
            out.append(text[pos : f.start])
            out.append(replacement)
            changes.append(Change(f.start, f.end, f.entity, op, replacement))
            pos = f.end
        out.append(text[pos:])
        return "".join(out), changes

    def detokenize(self, text: str) -> tuple[str, int]:
        """Restore every token this workspace made; returns (text, tokens restored). Tokens that do not
        authenticate (forged, or another workspace's) are left as they are."""
        count = 0

        def restore(m: re.Match[str]) -> str:
            nonlocal count
            blob = m.group(2) + "=" * (-len(m.group(2)) % 4)
            try:
                value = self._siv.decrypt(base64.urlsafe_b64decode(blob), [m.group(1).encode()]).decode()
            except Exception:  # InvalidTag or malformed: not ours
                return m.group()
            count += 1
            return value

        return _TOKEN.sub(restore, text), count


Operator = Callable[[str, str], str]
