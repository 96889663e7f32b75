"""The data-subject portal's front-door parts: how a one-time code reaches a person (a `Channel`: an
outbox directory by default, SMTP as an option), the portal's limits, and its secrets (references,
follow-up codes and one-time codes, kept only as keyed digests; identifiers and exports only sealed).

The session operations that use them live in app/ops/portal.py. Nothing here looks up whether a
person holds data: a code goes to whatever address was given, in the same words, the same way."""

from __future__ import annotations

import os
import secrets
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from pathlib import Path
from typing import Protocol

from complai.crypto.aead import DataKey
from complai.crypto.pseudonym import Pseudonymizer
from complai.errors import InvalidInput, WorkspaceError

OUTBOX = "portal-outbox"
# what a person may ask for at the portal: the register's request types, and withdrawing a consent
# (done at once once the code is entered: withdrawing must be as easy as giving)
PORTAL_KINDS = ("access", "portability", "rectification", "erasure", "restriction", "objection", "withdrawal")


@dataclass(frozen=True)
class PortalLimits:
    """How often the portal may be used, and how long its state lives.

    `submissions_per_address`/`per_subject` within `window_s`; `code_ttl_s`: a one-time code's life;
    `code_attempts`: wrong codes before a submission is locked; `refusals_per_address`: wrong codes
    and unknown follow-ups an address may make within the window; `retention_days`: how long a closed
    request's portal record (and an export) is kept after it closed."""

    submissions_per_address: int = 10
    submissions_per_subject: int = 3
    window_s: int = 3600
    code_ttl_s: int = 900
    code_attempts: int = 5
    refusals_per_address: int = 20
    retention_days: int = 30


@dataclass(frozen=True)
class PortalMessage:
    """One message to a person: the address it goes to, its subject line and plain-text body."""

    to: str
    subject: str
    body: str
    at: datetime


class Channel(Protocol):
    """Delivers a message to the address a person gave (raises WorkspaceError if it cannot)."""

    name: str

    def send(self, message: PortalMessage) -> None: ...


def one_recipient(to: str) -> str:
    """`to` if a mail system reads it as exactly that one recipient; InvalidInput otherwise. An identifier
    such as `me@example.org, other@example.net` or `"me@example.org" <other@example.net>` would send the
    code elsewhere too (and make the portal relay mail past its limit per identifier)."""
    if getaddresses([to]) != [("", to)]:
        raise InvalidInput("give one address only (no list, no name, no angle brackets)")
    return to


def _email(message: PortalMessage, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = one_recipient(message.to)
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(message.at)
    mail["Message-ID"] = make_msgid(domain="complai.invalid")
    mail.set_content(message.body)
    return mail


class OutboxChannel:
    """Writes each message as an RFC 5322 file (0600) into a directory (0700) that an organisation's own
    mail system, or a person testing the portal, picks up. The default channel."""

    name = "outbox"

    def __init__(self, directory: Path, sender: str = "privacy@complai.invalid") -> None:
        self.directory, self.sender = Path(directory), sender

    def send(self, message: PortalMessage) -> None:
        data = bytes(_email(message, self.sender))  # refused before any file is made
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            if self.directory.is_symlink() or not self.directory.is_dir():
                raise WorkspaceError(f"the portal outbox {self.directory} is not a directory")
            name = f"{message.at.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(8)}.eml"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(self.directory / name, flags, 0o600)
        except OSError as exc:
            raise WorkspaceError(f"cannot write to the portal outbox ({exc.strerror})") from None
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


@dataclass(frozen=True)
class SmtpSettings:
    """An SMTP relay: STARTTLS unless `tls` (implicit TLS, port 465) or `plain` (a local relay only)."""

    host: str
    port: int = 587
    sender: str = "privacy@localhost"
    user: str | None = None
    password: str | None = None
    tls: bool = False
    plain: bool = False
    timeout_s: float = 10.0

    def __repr__(self) -> str:
        return f"SmtpSettings(host={self.host!r}, port={self.port}, sender={self.sender!r}, user={self.user!r})"


class SmtpChannel:
    """Sends each message through an SMTP relay (smtplib), verifying the relay's certificate."""

    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def send(self, message: PortalMessage) -> None:
        s = self.settings
        context = ssl.create_default_context()
        try:
            smtp: smtplib.SMTP = (
                smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=context)
                if s.tls
                else smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
            )
            with smtp:
                if not s.tls and not s.plain:
                    smtp.starttls(context=context)
                if s.user:
                    smtp.login(s.user, s.password or "")
                smtp.send_message(_email(message, s.sender))
        except (OSError, smtplib.SMTPException) as exc:
            # the relay's reply may echo the address: name only the kind of failure
            raise WorkspaceError(f"the mail relay did not accept the message ({type(exc).__name__})") from None


# --- secrets -----------------------------------------------------------------------------------------

_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"  # no 0/O, 1/I/L, U: read aloud and typed back


def _token(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_reference() -> str:
    """A request's public reference: 16 characters (79 bits), shown in groups of four."""
    return "-".join(_token(4) for _ in range(4))


def new_follow_code() -> str:
    """The follow-up code shown once after verification: 16 characters (79 bits)."""
    return "-".join(_token(4) for _ in range(4))


def new_code() -> str:
    """A one-time code of eight digits (its attempts are limited and it expires)."""
    return f"{secrets.randbelow(10**8):08d}"


def normalise(text: str, length: int) -> str | None:
    """A reference or code as typed (any case, spaces or dashes), or None if it cannot be one."""
    t = "".join(ch for ch in text.upper() if ch not in " -\t")
    return t if len(t) == length and t.isalnum() and t.isascii() else None


def digest(pseudonyms: Pseudonymizer, kind: str, *parts: str) -> str:
    """A keyed digest of a portal secret (bound to what it is and, for codes, to its submission)."""
    return pseudonyms.value(b"complai/portal/" + kind.encode() + b"\x00" + "\x00".join(parts).encode())


def row_key(pseudonyms: Pseudonymizer, salt: bytes) -> DataKey:
    """The key that seals a portal row's identifier and export: derived from the workspace key and the
    row's salt, so deleting the row destroys them."""
    mac = pseudonyms.value(b"complai/portal/key\x00" + salt)
    return DataKey(bytes.fromhex(mac.split(":", 1)[1]))


def seal(key: DataKey, row: str, what: str, data: bytes) -> bytes:
    return key.seal(data, f"complai/portal/v1|{row}|{what}".encode())


def unseal(key: DataKey, row: str, what: str, blob: bytes) -> bytes:
    return key.open(blob, f"complai/portal/v1|{row}|{what}".encode())


def recipient_key(identifier: str) -> str:
    """What the limit per identifier counts: the identifier in one case, since `Me@Example.org` and
    `me@example.org` reach the same mailbox."""
    return identifier.strip().casefold()


def check_identifier(identifier: str) -> str:
    """The identifier a person gave, trimmed; InvalidInput if it cannot be one (the same for anyone)."""
    ident = identifier.strip()
    if not ident or len(ident) > 254 or any(ord(c) < 32 or c == "\x7f" for c in ident):
        raise InvalidInput("give the identifier you are known by (an email address, up to 254 characters)")
    return ident


def looks_like_address(identifier: str) -> bool:
    """Whether a message can be sent to it by mail: one @ with something either side, no spaces."""
    local, at, domain = identifier.rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in identifier))
