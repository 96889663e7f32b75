"""The ledger's vocabulary: one typed event class per kind of thing that happens.

An event's canonical bytes (RFC 8785 JSON Canonicalization Scheme) are the Merkle leaf data. Events
carry no personal data: subjects appear as keyed pseudonyms (`sp:` + HMAC-SHA256 hex) and values as
digests (`sha256:` + hex). Later capabilities add their event classes here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Annotated, Any, ClassVar

import rfc8785
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from complai.errors import IntegrityError, InvalidInput

EVENT_FORMAT = 1
_REGISTRY: dict[str, type[Event]] = {}
_PSEUDONYM = re.compile(r"^sp:[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_STORED = "complai.stored"
_DELEGATION: ContextVar[tuple[str, str] | None] = ContextVar("complai_delegation", default=None)


@contextmanager
def delegation(actor: str, delegated_by: str) -> Iterator[None]:
    """While inside, events whose actor is `actor` record `delegated_by`: the authenticated principal
    (an owner) acting as `actor` (`complai --as NAME`). Policy, budgets and rights are `actor`'s."""
    reset = _DELEGATION.set((actor, delegated_by))
    try:
        yield
    finally:
        _DELEGATION.reset(reset)


class Event(BaseModel):
    """Base event: what happened, when, who did it and for which declared purpose.

    `delegated_by` names the authenticated principal who acted as `actor` (an owner using `--as`);
    it is absent, not null, from the record when the actor acted itself, so events without it keep
    their canonical bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str] = ""

    time: datetime
    actor: str
    purpose: str
    delegated_by: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _delegated(cls, data: Any, info: ValidationInfo) -> Any:
        stored = bool(info.context and info.context.get(_STORED))
        current = _DELEGATION.get()
        if stored or current is None or not isinstance(data, dict) or data.get("delegated_by") is not None:
            return data
        if data.get("actor") == current[0]:
            return {**data, "delegated_by": current[1]}
        return data

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

    # fields absent from the record (not null) when they hold None: optional fields added later, so
    # that events written before them keep their canonical bytes
    absent_when_none: ClassVar[frozenset[str]] = frozenset({"delegated_by"})
    # fields that only events already in a ledger may carry: accepted when decoding, refused when new
    legacy_fields: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_new_legacy(cls, data: Any, info: ValidationInfo) -> Any:
        if cls.legacy_fields and isinstance(data, dict) and not (info.context and info.context.get(_STORED)):
            used = sorted(f for f in cls.legacy_fields if data.get(f) is not None)
            if used:
                raise ValueError(f"{cls.kind} events no longer carry {', '.join(used)}")
        return data

    # fields at their default that the stored record does not hold (set when decoding): events written
    # before a field was added keep their canonical bytes, whatever the field's default
    _absent: frozenset[str] = PrivateAttr(default=frozenset())

    def record(self) -> dict[str, Any]:
        """The JSON object stored in the ledger."""
        body = self.model_dump(mode="json")
        for name in self.absent_when_none | self.legacy_fields:
            if body.get(name) is None:
                body.pop(name, None)
        for name in self._absent:
            body.pop(name, None)
        return {"type": self.kind, "v": EVENT_FORMAT, **body}

    def canonical(self) -> bytes:
        return rfc8785.dumps(self.record())


def event_types() -> dict[str, type[Event]]:
    return dict(_REGISTRY)


def decode_event(data: bytes) -> Event:
    """Parse canonical bytes back into a typed event; raise IntegrityError if they are not canonical."""
    try:
        obj = json.loads(data)
        kind = obj.pop("type")
        obj.pop("v")
        cls = _REGISTRY[kind]
        event = cls.model_validate(obj, context={_STORED: True})
        written = set(event.record())  # what a record of this event holds today
        missing = {
            name
            for name, info in cls.model_fields.items()
            if name in written and name not in obj and not info.is_required() and getattr(event, name) == info.default
        }
        event._absent = frozenset(missing)
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


def _keyed_digest(value: str) -> str:
    if not _KEYED_DIGEST.match(value):
        raise ValueError("keyed value digests in events are hmac-sha256:<64 hex>")
    return value


_KEYED_DIGEST = re.compile(r"^hmac-sha256:[0-9a-f]{64}$")
Pseudonym = Annotated[str, AfterValidator(_pseudonym)]
Digest = Annotated[str, AfterValidator(_digest)]
KeyedDigest = Annotated[str, AfterValidator(_keyed_digest)]


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
    # HMAC of a fixed label under keys/pseudonym.key (never the key): opening the workspace checks it
    pseudonym_key_fingerprint: str | None = None


class PseudonymKeyRecorded(Event):
    """The pseudonym key's fingerprint, recorded once for a workspace created before init recorded it."""

    kind: ClassVar[str] = "keys.pseudonym_key_recorded"
    pseudonym_key_fingerprint: str


class SchemaMigrated(Event):
    kind: ClassVar[str] = "store.migrated"
    from_revision: str | None
    to_revision: str


class WitnessTrusted(Event):
    kind: ClassVar[str] = "ledger.witness_trusted"
    witness: str
    witness_key_id: str


class LedgerCheckpointed(Event):
    """A signed checkpoint of the log, recorded in the log itself: it covers the entries before this
    one (`size` is this entry's sequence number), so a stored checkpoint cannot vanish unnoticed."""

    kind: ClassVar[str] = "ledger.checkpoint"
    size: int
    root: str  # hex of the signed root at `size`
    signature_digest: Digest  # of the log's signature on the checkpoint note


class DatasetRegistered(Event):
    kind: ClassVar[str] = "dataset.registered"
    dataset: str
    schema_digest: Digest
    fields: int
    purposes: dict[str, str]
    retention: str
    jurisdiction: str
    # an external dataset (records kept by their owner's system, read through Spark): its kind, location
    # and owner, and (since they were recorded) owner_key_id (the key id of the X25519 key its erasure
    # requests are sealed to), erasure_days, time_column (absent when none) and physical_digest (of the
    # physical types it was checked against); absent for a dataset whose records the vault stores
    source: dict[str, str] | None = None
    absent_when_none: ClassVar[frozenset[str]] = Event.absent_when_none | {"source"}


class DatasetAltered(Event):
    """A dataset's schema changed to a new version: the digests of both versions, what changed, and how
    many stored records were checked against the new version (records keep the version they were sealed
    under; the new retention applies to records ingested from now on)."""

    kind: ClassVar[str] = "dataset.altered"
    dataset: str
    from_version: int
    version: int
    from_schema_digest: Digest
    schema_digest: Digest
    changes: dict[str, list[str]]
    records_checked: int
    fields: int
    purposes: dict[str, str]
    retention: str
    jurisdiction: str


class DatasetDropped(Event):
    """A dataset dropped: every record deleted (count and record-set hash), the subjects left without
    records anywhere crypto-shredded as an erasure does (count and pseudonym-set digest, keys destroyed,
    their consents deleted), the others keeping their keys. The name stays taken (a tombstone)."""

    kind: ClassVar[str] = "dataset.dropped"
    dataset: str
    version: int
    schema_digest: Digest
    records: int
    records_digest: str
    subjects: int
    subjects_shredded: int
    subject_pseudonyms_digest: Digest
    subjects_kept: int
    keys_destroyed: int
    consents: int
    consents_digest: str
    withdrawals_digest: str
    reapplied_from: int | None = None


# --- vault events ------------------------------------------------------------------------------


class RecordsIngested(Event):
    kind: ClassVar[str] = "vault.ingested"
    dataset: str
    rows: int
    subjects: int
    new_subjects: int
    skipped_erased_rows: int
    consents: int
    subjects_digest: Digest
    source_digest: Digest
    # multiset hash of the (dataset, subject pseudonym, record id) stored, for reconciliation (RECON-1)
    records_digest: str | None = None
    consents_digest: str | None = None  # multiset hashes of the consents stored and of their withdrawals
    withdrawals_digest: str | None = None
    # what the ingest did with rows whose record was stored (insert, append, upsert, replace): rows counts
    # the records it stored (inserted + updated); removed_records those it deleted (updated + deleted),
    # removed_digest their multiset hash, for reconciliation (RECON-1)
    mode: str | None = None
    inserted: int | None = None
    updated: int | None = None
    deleted: int | None = None
    skipped_existing_rows: int | None = None
    removed_records: int | None = None
    removed_digest: str | None = None
    # live subjects holding no record after an ingest that deleted records (superseded ones keep theirs)
    subjects_without_records: int | None = None


class DataRead(Event):
    kind: ClassVar[str] = "vault.read"
    dataset: str
    columns: list[str]
    rows: int
    subjects: int
    records_in_dataset: int
    subjects_digest: Digest
    deidentification: dict[str, Any] | None = None


class ConsentGranted(Event):
    kind: ClassVar[str] = "consent.granted"
    subject: Pseudonym
    for_purpose: str
    basis: str
    notice_version: str
    source: str


class ConsentWithdrawn(Event):
    kind: ClassVar[str] = "consent.withdrawn"
    subject: Pseudonym
    for_purpose: str
    consents: int
    withdrawals_digest: str | None = None  # multiset hash of the withdrawals made (RECON-1)


class ObjectionRecorded(Event):
    kind: ClassVar[str] = "subject.objected"
    subject: Pseudonym
    for_purpose: str
    objection: str


class SubjectExported(Event):
    kind: ClassVar[str] = "subject.exported"
    subject: Pseudonym
    records: int
    export_digest: Digest


class SubjectRectified(Event):
    kind: ClassVar[str] = "subject.rectified"
    subject: Pseudonym
    dataset: str
    field: str
    records: int
    # keyed (hmac-sha256:), so that the value cannot be guessed back; events written before carry sha256:
    value_digest: KeyedDigest | Digest
    record_versions: dict[str, int] | None = None  # record id (hex) -> its version after this rectification


class SubjectRestricted(Event):
    kind: ClassVar[str] = "subject.restricted"
    subject: Pseudonym
    restricted: bool
    reason_digest: Digest


class SubjectErased(Event):
    kind: ClassVar[str] = "subject.erased"
    subject: Pseudonym
    records: int
    keys_destroyed: int
    consents: int
    reapplied_from: int | None = None
    records_by_dataset: dict[str, int] | None = None
    records_digests: dict[str, str] | None = None  # per dataset: multiset hash of the records deleted
    consents_digest: str | None = None  # multiset hashes of the consents deleted and of their withdrawals
    withdrawals_digest: str | None = None
    # ids of the erasure requests opened for the external datasets the subject was enrolled in (their
    # owners delete the rows); absent when the subject was enrolled in none
    external_requests: list[str] | None = None
    absent_when_none: ClassVar[frozenset[str]] = Event.absent_when_none | {"external_requests"}


class SubjectsEnrolled(Event):
    """Subjects of an external dataset enrolled: the vault holds their identity, keys and consents, the
    owner's system their rows, joined by a keyed link (HMAC of the external id under the dataset's link
    key). Counts and the digest of the links stored, never an id."""

    kind: ClassVar[str] = "external.enrolled"
    dataset: str
    subjects: int
    new_subjects: int
    consents: int
    links_digest: Digest
    consents_digest: str | None = None  # multiset hashes of the consents stored and of their withdrawals (RECON-1)
    withdrawals_digest: str | None = None
    # multiset hash of the (dataset, subject pseudonym, link) triples stored (vault/external.link_element):
    # enrolments' sets less those of the erasure requests must equal the links stored (RECON-1)
    links_set: str | None = None
    absent_when_none: ClassVar[frozenset[str]] = Event.absent_when_none | {"links_set"}


class ErasureRequestsExported(Event):
    """Erasure requests for an external dataset's rows sealed to its owner's key and written out."""

    kind: ClassVar[str] = "external.requests_exported"
    dataset: str
    requests: int
    recipient_key_id: str


class ExternalErasureChecked(Event):
    """External datasets scanned for the rows of erased subjects: per dataset, how many requests were
    checked and how many rows were gone or still present (`{dataset: {"requests", "gone", "present"}}`)."""

    kind: ClassVar[str] = "external.erasure_checked"
    results: dict[str, dict[str, int]]
    requests_digest: Digest


class RetentionSwept(Event):
    kind: ClassVar[str] = "retention.swept"
    records: int
    by_dataset: dict[str, int]
    subjects_shredded: int
    subject_pseudonyms_digest: Digest
    records_digests: dict[str, str] | None = None  # per dataset: multiset hash of the records deleted
    consents_digest: str | None = None  # multiset hashes of the consents deleted and of their withdrawals
    withdrawals_digest: str | None = None


class KeysRotated(Event):
    kind: ClassVar[str] = "keys.rotated"
    from_version: int
    to_version: int
    deks_rewrapped: int
    resumed: bool
    retired: list[int]


class BackupCreated(Event):
    kind: ClassVar[str] = "backup.created"
    backup_digest: Digest
    ledger_size: int
    tables: dict[str, int]


class BackupRestored(Event):
    kind: ClassVar[str] = "backup.restored"
    backup_digest: Digest
    backup_ledger_size: int
    erasures_reapplied: int
    later_ledger_checked: bool
    later_ledgers: int = 0  # how many newer ledgers (live workspace, exports) erasures were taken from


# --- access events -----------------------------------------------------------------------------


class PrincipalAdded(Event):
    kind: ClassVar[str] = "principal.added"
    principal: str
    principal_kind: str
    has_password: bool


class PrincipalDisabled(Event):
    kind: ClassVar[str] = "principal.disabled"
    principal: str


class TokenCreated(Event):
    kind: ClassVar[str] = "token.created"
    absent_when_none: ClassVar[frozenset[str]] = Event.absent_when_none | {"secret_digest"}
    token_id: str
    principal: str
    expires: str | None
    # SHA-256 of the stored secret hash (never the secret), so a hash replaced at rest is found (RECON-1);
    # absent from tokens created before it was recorded
    secret_digest: str | None = None


class TokenRevoked(Event):
    kind: ClassVar[str] = "token.revoked"
    token_id: str


class TokenLifetimeSet(Event):
    """The longest lifetime of a token minted without the owner role (ISO 8601 duration)."""

    kind: ClassVar[str] = "token.lifetime_set"
    max_lifetime: str


class AuthenticationRefused(Event):
    kind: ClassVar[str] = "auth.refused"
    token_id: str | None
    reason: str


class RoleChanged(Event):
    kind: ClassVar[str] = "role.changed"
    principal: str
    role: str
    granted: bool


class PolicyChanged(Event):
    kind: ClassVar[str] = "policy.changed"
    rule_id: int
    subject: str
    domain: str
    action: str
    for_purpose: str
    effect: str
    added: bool
    policy_version: int


class AccessDenied(Event):
    kind: ClassVar[str] = "access.denied"
    action: str
    dataset: str
    reason: str


class AgreementChanged(Event):
    kind: ClassVar[str] = "agreement.changed"
    absent_when_none: ClassVar[frozenset[str]] = Event.absent_when_none | {"terms_digest"}
    agreement: str
    recipient: str
    dataset: str
    for_purpose: str
    fields: list[str]
    expires: str
    max_uses: int
    change: str
    # on creation: SHA-256 of the terms the ledger does not list (recipient key, de-identification,
    # transfer), so a recipient key or a de-identification setting replaced at rest is found (RECON-1)
    terms_digest: str | None = None


class DataShared(Event):
    kind: ClassVar[str] = "data.shared"
    agreement: str
    recipient: str
    dataset: str
    fields: list[str]
    rows: int
    subjects: int
    subjects_digest: Digest
    data_digest: Digest
    use: int


# --- de-identification events ------------------------------------------------------------------


class TableDeidentified(Event):
    kind: ClassVar[str] = "deid.table"
    rows: int
    quasi_identifiers: list[str]
    sensitive: str | None
    k: int
    l: int | None  # noqa: E741
    t: float | None
    achieved_k: int
    classes: int
    suppressed_rows: int
    input_digest: Digest
    output_digest: Digest


class TextDeidentified(Event):
    kind: ClassVar[str] = "deid.text"
    documents: int
    characters: int
    findings: dict[str, int]
    operators: dict[str, str]
    input_digest: Digest


class TextColumnDeidentified(Event):
    """A text column of a Parquet source the caller holds de-identified on Spark (`deid column`): the
    rows, characters (of the texts before) and findings per entity type, never a text. `input_digest`
    identifies the input without reading its rows again: the SHA-256 of its physical schema (Spark's
    JSON) and of its data files' names (relative to the source) and sizes, so two inputs of one schema
    and one file layout share it."""

    kind: ClassVar[str] = "deid.text_column"
    column: str
    rows: int
    characters: int
    findings: dict[str, int]
    operators: dict[str, str]
    input_digest: Digest


class AnonymityChecked(Event):
    """The k, l and t a Parquet source the caller holds achieves as it is, measured on Spark (`deid
    check`), with the thresholds asked (None: not asked) and whether all were met. `input_digest` as
    `deid.text_column`'s: the source's physical schema and its data files' names and sizes."""

    kind: ClassVar[str] = "deid.anonymity_checked"
    rows: int
    classes: int
    quasi_identifiers: list[str]
    sensitive: str | None
    ordered: bool
    k: int
    l_distinct: int | None
    l_entropy: float | None
    t: float | None
    k_asked: int | None
    l_asked: int | None
    l_kind: str | None
    t_asked: float | None
    met: bool
    input_digest: Digest


class TextDetokenized(Event):
    kind: ClassVar[str] = "deid.detokenized"
    tokens: int
    input_digest: Digest


# --- differential privacy events ---------------------------------------------------------------


class BudgetSet(Event):
    kind: ClassVar[str] = "dp.budget_set"
    dataset: str
    principal: str
    epsilon: float
    delta: float
    rho: float


class BudgetSpent(Event):
    kind: ClassVar[str] = "dp.spent"
    dataset: str
    rho: float
    epsilon: float
    delta: float
    mechanism: str
    epsilon_remaining: float


class DPQueryAnswered(Event):
    """A DP query answered. Only public parameters (the statement's digest, the statistics asked for,
    epsilon, delta, rho, mechanism, the budget left): nothing computed from the data, not even a count."""

    kind: ClassVar[str] = "dp.query"
    dataset: str
    query_digest: Digest
    statistics: list[str]
    group_by: str | None
    epsilon: float
    delta: float
    rho: float
    mechanism: str
    epsilon_remaining: float
    # events written before the release discipline carried the exact row count after WHERE: still
    # decoded so that older ledgers verify, never written again
    rows_used: int | None = None
    legacy_fields: ClassVar[frozenset[str]] = frozenset({"rows_used"})
    # the digest of the schema version the query was planned against (bounds calibrate the noise); absent
    # from answers recorded before schemas were versioned
    schema_digest: Digest | None = None
    # partition selection (group keys not declared in the schema): its public parameters, {"threshold",
    # "delta"} (the delta it spends); absent when the keys were declared
    selection: dict[str, float] | None = None
    absent_when_none: ClassVar[frozenset[str]] = Event.absent_when_none | {"schema_digest", "selection"}


# --- model training (dp.training) and audits (dp.audit) -------------------------------------------


class ModelTrained(Event):
    """A model trained on a dataset: its privacy parameters as the accountant saw them, the digests that
    tie the stored weights and card to this entry, and the training subjects' set digest."""

    kind: ClassVar[str] = "model.trained"
    model_id: str
    dataset: str
    architecture: str
    private: bool
    epsilon: float | None
    delta: float | None
    accountant: str | None
    noise_multiplier: float | None
    sample_rate: float
    steps: int
    max_grad_norm: float | None
    subjects: int
    manifest_digest: Digest
    model_digest: Digest
    card_digest: Digest


class ModelAudited(Event):
    """A membership-inference audit of a model: the attacks' results next to the claimed epsilon."""

    kind: ClassVar[str] = "model.audited"
    model_id: str
    claimed_epsilon: float | None
    members: int
    non_members: int
    shadow_models: int
    results: dict[str, dict[str, float]]
    empirical_epsilon: float
    report_digest: Digest


# --- federated learning ------------------------------------------------------------------------------


class FederatedUpdateSent(Event):
    """What left an organisation in one federated round: a digest of the (masked) update, never data."""

    kind: ClassVar[str] = "federated.update_sent"
    run_id: str
    round: int
    dataset: str
    examples: int
    secure_aggregation: bool
    local_dp: bool
    update_digest: Digest


class FederatedRound(Event):
    """One aggregation round as the coordinating server saw it."""

    kind: ClassVar[str] = "federated.round"
    run_id: str
    round: int
    sampled: int
    survivors: int
    dropped: int
    secure_aggregation: bool
    dp: str
    noise_multiplier: float | None
    clip_norm: float | None
    sample_rate: float
    epsilon: float | None
    delta: float | None
    aggregate_digest: Digest


# --- compliance ----------------------------------------------------------------------------------------


class ComplianceAudited(Event):
    """A compliance audit: the digest of its canonical JSON report and what it covered."""

    kind: ClassVar[str] = "compliance.audited"
    report_digest: Digest
    ledger_size: int
    ledger_root: str
    since: int
    passed: int
    failed: int
    not_applicable: int
    not_evaluated: int


class RequestOpened(Event):
    """A data subject request entered the register, with its legal deadline."""

    kind: ClassVar[str] = "request.opened"
    request: str
    request_kind: str
    subject: Pseudonym
    jurisdiction: str
    due_at: datetime
    ack_due_at: datetime | None


class RequestUpdated(Event):
    """A step on a request: identity verified, acknowledged, extended, fulfilment steps, closed."""

    kind: ClassVar[str] = "request.updated"
    request: str
    change: str
    status: str
    due_at: datetime
    steps: list[dict[str, Any]]


class IncidentOpened(Event):
    """A suspected personal-data breach (GDPR Art. 33): the 72-hour notification clock starts."""

    kind: ClassVar[str] = "incident.opened"
    incident: str
    incident_kind: str
    notify_by: datetime
    evidence: dict[str, Any]


class IncidentUpdated(Event):
    kind: ClassVar[str] = "incident.updated"
    incident: str
    change: str


class DpiaRecorded(Event):
    """A data protection impact assessment (GDPR Art. 35) generated for a dataset, or signed off."""

    kind: ClassVar[str] = "dpia.recorded"
    dataset: str
    version: int
    change: str
    digest: Digest
    triggers: list[str]
    signed_by: str | None = None


class PortalSubmitted(Event):
    """A request or consent withdrawal submitted at the subject portal, awaiting the one-time code sent
    to the address given. The subject by pseudonym only, recorded alike whether or not they hold data."""

    kind: ClassVar[str] = "portal.submitted"
    submission: str
    request_kind: str
    subject: Pseudonym
    channel: str
