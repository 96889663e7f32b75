"""The ledger's vocabulary: one typed event class per kind of thing that happens.

An event's canonical bytes (RFC 8785 JSON Canonicalization Scheme) are the Merkle leaf data. Events
carry no personal data: subjects appear as keyed pseudonyms (`sp:` + HMAC-SHA256 hex) and values as
digests (`sha256:` + hex). Later capabilities add their event classes here.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar

import rfc8785
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator

from complai.errors import IntegrityError, InvalidInput

EVENT_FORMAT = 1
_REGISTRY: dict[str, type[Event]] = {}
_PSEUDONYM = re.compile(r"^sp:[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class Event(BaseModel):
    """Base event: what happened, when, who did it and for which declared purpose."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str] = ""

    time: datetime
    actor: str
    purpose: str

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if not cls.kind:
            raise TypeError(f"{cls.__name__} must set kind")
        if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
            raise TypeError(f"duplicate event kind {cls.kind!r}")
        _REGISTRY[cls.kind] = cls

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("event time must be timezone-aware")
        return value

    def record(self) -> dict[str, Any]:
        """The JSON object stored in the ledger."""
        body = self.model_dump(mode="json")
        return {"type": self.kind, "v": EVENT_FORMAT, **body}

    def canonical(self) -> bytes:
        return rfc8785.dumps(self.record())


def event_types() -> dict[str, type[Event]]:
    return dict(_REGISTRY)


def decode_event(data: bytes) -> Event:
    """Parse canonical bytes back into a typed event; raise IntegrityError if they are not canonical."""
    import json

    try:
        obj = json.loads(data)
        kind = obj.pop("type")
        obj.pop("v")
        cls = _REGISTRY[kind]
        event = cls.model_validate(obj)
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise IntegrityError(f"ledger entry is not a valid event ({type(exc).__name__})") from None
    if event.canonical() != bytes(data):
        raise IntegrityError("ledger entry is not in canonical form")
    return event


def _pseudonym(value: str) -> str:
    if not _PSEUDONYM.match(value):
        raise ValueError("subject references in events must be keyed pseudonyms (sp:<64 hex>)")
    return value


def _digest(value: str) -> str:
    if not _DIGEST.match(value):
        raise ValueError("values in events must be digests (sha256:<64 hex>)")
    return value


Pseudonym = Annotated[str, AfterValidator(_pseudonym)]
Digest = Annotated[str, AfterValidator(_digest)]


def check_pseudonym(value: str) -> str:
    try:
        return _pseudonym(value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


# --- foundation events -------------------------------------------------------------------------


class WorkspaceCreated(Event):
    kind: ClassVar[str] = "workspace.created"
    workspace_id: str
    schema_revision: str
    ledger_key_id: str


class SchemaMigrated(Event):
    kind: ClassVar[str] = "store.migrated"
    from_revision: str | None
    to_revision: str


class DatasetRegistered(Event):
    kind: ClassVar[str] = "dataset.registered"
    dataset: str
    schema_digest: Digest
    fields: int
    purposes: list[str]
    retention: str
    jurisdiction: str
