"""Operators: what to do with each finding, separate from finding it (as in Presidio).

- redact: remove the value; replace: `<ENTITY>`; mask: all but the last four characters become `*`;
- hash: a keyed pseudonym (HMAC-SHA256): under one key the same value gives the same pseudonym across
  documents and datasets, and nobody without the key can test a guess;
- tokenize: reversible AES-SIV (RFC 5297), bound to the entity type; `detokenize` restores the exact
  text (findings are made non-overlapping first, so overlapping detections round-trip too, unlike
  Presidio's default conflict strategy);
- date_shift: moves a date by a secret per-subject offset (HMAC of the subject), keeping its format,
  so intervals within one subject's data survive;
- generalize: dates to their year, numbers to a bucket of a given width.

Keys come in domains that never share a key (`Keys.adhoc`): governed reads use the workspace's keys;
de-identification of what a caller holds uses keys derived (HKDF) for its principal and purpose, and
tokens under an ad-hoc key with a fresh nonce per call. A caller can run any guess through the ad-hoc
operators: were their keys the governed ones, every pseudonym, hash, token and date offset a governed
read shows could be tested against guesses by anyone with a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
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


NONCE = 16
"""Bytes of the nonce an ad-hoc token carries (the last associated-data component of RFC 5297)."""


def derive(workspace_key: bytes, purpose: bytes, length: int = 32) -> bytes:
    return HKDF(hashes.SHA256(), length, salt=None, info=b"complai/deid/" + purpose).derive(workspace_key)


def _labelled(*parts: str) -> bytes:
    """An unambiguous encoding of names (each length-prefixed), so no two (principal, purpose) pairs
    share a label."""
    return b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)


def _adhoc_key(key: bytes, kind: bytes, label: bytes) -> bytes:
    # HKDF over the governed key, under an info string no governed key is derived with: the result is
    # independent of every output the governed key gives (pseudonyms, tokens, offsets)
    return HKDF(hashes.SHA256(), len(key), salt=None, info=b"complai/deid/adhoc/" + kind + b"/" + label).derive(key)


@dataclass(frozen=True)
class Keys:
    """Operator keys derived from the workspace's pseudonym key; never printed."""

    pseudonym: bytes
    token: bytes
    date_shift: bytes

    @classmethod
    def from_workspace_key(cls, key: bytes) -> Keys:
        return cls(derive(key, b"pseudonym"), derive(key, b"tokenize", 64), derive(key, b"date-shift"))

    def adhoc(self, principal: str, purpose: str) -> Keys:
        """The keys of de-identifying what a caller holds (no dataset), a domain apart from the governed
        one: pseudonyms, hashes and date offsets are keyed per (principal, purpose), so only that
        principal acting for that purpose can reproduce them. The token key is one for every ad-hoc
        call, so whoever the policy lets detokenize reverses them (`complai deid detokenize` runs for
        another purpose than `deid text`); an ad-hoc Anonymizer binds each call's tokens to a nonce of
        its own, so they are no oracle either."""
        who = _labelled(principal, purpose)
        return Keys(
            _adhoc_key(self.pseudonym, b"pseudonym", who),
            _adhoc_key(self.token, b"tokenize", b""),
            _adhoc_key(self.date_shift, b"date-shift", who),
        )

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
    """Operators under one domain's keys. With `nonced`, every token carries a nonce drawn once for
    this anonymizer and is bound to it: the same value tokenises alike within one call and differently
    in the next, so tokens are no oracle for guesses; detokenising expects such tokens. Without,
    tokens are deterministic (governed reads)."""

    def __init__(self, keys: Keys, *, nonced: bool = False) -> None:
        self.keys = keys
        self._siv = AESSIV(keys.token)
        self._nonce = os.urandom(NONCE) if nonced else None

    @classmethod
    def adhoc(cls, keys: Keys, principal: str, purpose: str) -> Anonymizer:
        """The anonymizer of one ad-hoc call by `principal` for `purpose` (see Keys.adhoc)."""
        return cls(keys.adhoc(principal, purpose), nonced=True)

    def pseudonym(self, entity: str, value: str) -> str:
        mac = hmac.digest(self.keys.pseudonym, entity.encode() + b"\x00" + value.encode(), hashlib.sha256)
        return f"<{entity}_{mac.hex()[:12]}>"

    def token(self, entity: str, value: str) -> str:
        if self._nonce is None:
            sealed = self._siv.encrypt(value.encode(), [entity.encode()])
        else:
            sealed = self._nonce + self._siv.encrypt(value.encode(), [entity.encode(), self._nonce])
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

    def open_token(self, entity: str, blob: str) -> str | None:
        """The value a token of this domain holds; None for a token that does not authenticate under
        this domain's key (forged, moved to another entity type, another domain's or workspace's)."""
        try:
            sealed = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
            if self._nonce is None:
                return self._siv.decrypt(sealed, [entity.encode()]).decode()
            if len(sealed) <= NONCE:
                return None
            nonce = sealed[:NONCE]
            return self._siv.decrypt(sealed[NONCE:], [entity.encode(), nonce]).decode()
        except Exception:  # InvalidTag or malformed: not ours
            return None

    def detokenize(self, text: str, *others: Anonymizer) -> tuple[str, int]:
        """Restore every token this domain (or one of `others`) made, in one pass; returns (text, tokens
        restored). A token opens only under its own domain's key; tokens that do not authenticate
        (forged, or another domain's or workspace's) are left as they are."""
        count = 0

        def restore(m: re.Match[str]) -> str:
            nonlocal count
            for domain in (self, *others):
                value = domain.open_token(m.group(1), m.group(2))
                if value is not None:
                    count += 1
                    return value
            return m.group()

        return _TOKEN.sub(restore, text), count


Operator = Callable[[str, str], str]
