"""Table definitions (SQLAlchemy Core). Migrations under migrations/versions must produce exactly these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# 64-bit ids; on SQLite an INTEGER PRIMARY KEY is the rowid (autoincrementing)
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("schema_json", Text, nullable=False),
    Column("schema_digest", String(80), nullable=False),
    Column("purposes_json", Text, nullable=False),
    Column("retention", String(32), nullable=False),
    Column("jurisdiction", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # the current schema version (0014); a dropped dataset keeps its row as a tombstone (0014)
    Column("version", Integer, nullable=False, server_default="1"),
    Column("dropped_at", DateTime(timezone=True), nullable=True),
)

# every schema a dataset has had (0014): a record opens under the digest of the version it was sealed with
dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("dataset", String(128), ForeignKey("datasets.name"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("schema_json", Text, nullable=False),
    Column("schema_digest", String(80), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# --- ledger ------------------------------------------------------------------------------------
# Entries are the Merkle leaves. Interior nodes are kept only at every STRATUM-th level (see
# ledger/log.py): enough to answer any proof in O(log n) reads while adding ~1/15 row per append.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("data", LargeBinary, nullable=False),
    # the entries of a kind from a sequence number on (spends since a budget mark, checkpoints) (0013)
    Index("ix_ledger_entries_kind_seq", "kind", "seq"),
)

ledger_nodes = Table(
    "ledger_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("frontier", LargeBinary, nullable=False),
)

ledger_checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

ledger_witnesses = Table(
    "ledger_witnesses",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("vkey", Text, nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
)

ledger_cosignatures = Table(
    "ledger_cosignatures",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("witness", String(128), primary_key=True),
    Column("line", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# --- vault -------------------------------------------------------------------------------------
# Subjects are named by a keyed pseudonym; their external id is kept only encrypted under their own
# data key, so crypto-shredding also erases it. Record times are epoch microseconds (UTC): compared
# in SQL on the hot read path, with no driver-specific timestamp handling.
subjects = Table(
    "subjects",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("pseudonym", String(80), nullable=False, unique=True),
    Column("external_enc", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=True),
    Column("restricted_at", DateTime(timezone=True), nullable=True),
    Column("restriction_reason", String(200), nullable=True),
)

subject_keys = Table(
    "subject_keys",
    metadata,
    Column("subject_id", Id, ForeignKey("subjects.id"), primary_key=True, autoincrement=False),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("kek_version", Integer, nullable=False, index=True),
    Column("wrapped", LargeBinary, nullable=False),
    Column("encryptions", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

consents = Table(
    "consents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subject_id", Id, ForeignKey("subjects.id"), nullable=False),
    Column("purpose", String(128), nullable=False),
    Column("basis", String(64), nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False),
    Column("withdrawn_at", DateTime(timezone=True), nullable=True),
    Column("notice_version", String(64), nullable=False),
    Column("source", String(128), nullable=False),
    Index("ix_consents_subject_purpose", "subject_id", "purpose"),
)

objections = Table(
    "objections",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subject_id", Id, ForeignKey("subjects.id"), nullable=False),
    Column("purpose", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("lifted_at", DateTime(timezone=True), nullable=True),
    Index("ix_objections_subject_purpose", "subject_id", "purpose"),
)

records = Table(
    "records",
    metadata,
    Column("rid", LargeBinary(16), primary_key=True),
    Column("dataset", String(128), ForeignKey("datasets.name"), nullable=False),
    Column("subject_id", Id, ForeignKey("subjects.id"), nullable=False),
    Column("dek_version", Integer, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    # incremented by each rectification; bound, with created_us and expires_us, into the AEAD associated
    # data (NULL only for records sealed before that binding, re-sealed when the workspace is opened)
    Column("version", Integer, nullable=True),
    # the dataset schema version the record was sealed under; its digest is in the associated data (0014)
    Column("schema_version", Integer, nullable=False, server_default="1"),
    # keyed digest of what names the record (its record_key, or subject and values), unique per dataset (0015)
    Column("record_key", LargeBinary(32), nullable=True),
    Index("ux_records_dataset_key", "dataset", "record_key", unique=True),
    Index("ix_records_dataset_subject", "dataset", "subject_id"),
    Index("ix_records_subject", "subject_id"),
    Index("ix_records_dataset_expires", "dataset", "expires_us"),
)

# --- access ------------------------------------------------------------------------------------
principals = Table(
    "principals",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("password_hash", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
)

role_grants = Table(
    "role_grants",
    metadata,
    Column("principal", String(128), ForeignKey("principals.name"), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("granted_by", String(128), nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("principal", String(128), ForeignKey("principals.name"), nullable=False),
    Column("secret_hash", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

policy_rules = Table(
    "policy_rules",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subject", String(128), nullable=False),
    Column("domain", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("purpose", String(128), nullable=False),
    Column("effect", String(8), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("subject", "domain", "action", "purpose", "effect", name="uq_policy_rules_rule"),
)

agreements = Table(
    "agreements",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("recipient", String(200), nullable=False),
    Column("recipient_key", Text, nullable=False),
    Column("dataset", String(128), ForeignKey("datasets.name"), nullable=False),
    Column("purpose", String(128), nullable=False),
    Column("fields_json", Text, nullable=False),
    Column("deid_json", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("max_uses", Integer, nullable=False),
    Column("uses", Integer, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # where the recipient is and under which mechanism data may go there (0011)
    Column("recipient_jurisdiction", String(32), nullable=True),
    Column("transfer_mechanism", String(32), nullable=True),
)

# --- differential privacy ----------------------------------------------------------------------
dp_budgets = Table(
    "dp_budgets",
    metadata,
    Column("dataset", String(128), ForeignKey("datasets.name"), primary_key=True),
    Column("principal", String(128), primary_key=True),
    Column("epsilon", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("rho_total", Float, nullable=False),
    Column("rho_spent", Float, nullable=False),
    Column("eps_spent", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # (epsilon, delta)-DP spends (DP-SGD) compose by adding both (0006)
    Column("approx_eps_spent", Float, nullable=False, server_default="0"),
    Column("approx_delta_spent", Float, nullable=False, server_default="0"),
)

dp_spends = Table(
    "dp_spends",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("dataset", String(128), ForeignKey("datasets.name"), nullable=False, index=True),
    Column("principal", String(128), nullable=False),
    Column("rho", Float, nullable=False),
    Column("eps", Float, nullable=False),
    Column("delta", Float, nullable=False, server_default="0"),
    Column("mechanism", String(64), nullable=False),
    Column("what", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# --- models (0006) ---------------------------------------------------------------------------------

models = Table(
    "models",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("dataset", String(128), ForeignKey("datasets.name"), nullable=False, index=True),
    Column("task", String(64), nullable=False),
    Column("architecture", String(64), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("private", Boolean, nullable=False),
    Column("epsilon", Float),
    Column("delta", Float),
    Column("subjects", Integer, nullable=False),
    Column("model_digest", String(80), nullable=False),
    Column("card_digest", String(80), nullable=False),
    Column("card", Text, nullable=False),
    Column("flagged_at", DateTime(timezone=True)),
    Column("flag_reason", String(200)),
)

# which subjects' records trained which model, so that an erasure can flag the models it touches; a
# subject's rows go when the subject is erased (the flag on the model stays)
model_subjects = Table(
    "model_subjects",
    metadata,
    Column("model_id", String(64), ForeignKey("models.id"), primary_key=True),
    Column("subject_id", Id, ForeignKey("subjects.id"), primary_key=True, index=True),
)

# --- access log (0007) -----------------------------------------------------------------------------
# Which subjects each governed read reached (by the read's ledger entry): their internal ids, packed as
# sorted little-endian int64s in one row per read, written in the read's transaction, so that an audit
# can check every access against the consent and objection history at that time. The ledger keeps only
# the set digest; internal ids carry no personal data (an erased subject's id points to a tombstone).
access_log = Table(
    "access_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("subject_ids", LargeBinary, nullable=False),
)

# --- subject requests (0008) -----------------------------------------------------------------------
subject_requests = Table(
    "subject_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("subject", String(80), nullable=False, index=True),  # the subject's pseudonym
    Column("jurisdiction", String(32), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("ack_due_at", DateTime(timezone=True)),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("extended_at", DateTime(timezone=True)),
    Column("verified_at", DateTime(timezone=True)),
    Column("verification", String(64)),
    Column("status", String(32), nullable=False),
    Column("steps_json", Text, nullable=False),
    Column("closed_at", DateTime(timezone=True)),
    Column("opened_by", String(128), nullable=False),
)

# --- incidents (0009) ------------------------------------------------------------------------------
incidents = Table(
    "incidents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("description", Text, nullable=False),
    Column("evidence_json", Text, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("notify_by", DateTime(timezone=True), nullable=False),
    Column("notified_at", DateTime(timezone=True)),
    Column("authority", String(200)),
    Column("closed_at", DateTime(timezone=True)),
    Column("opened_by", String(128), nullable=False),
)

# --- DPIAs (0010) ----------------------------------------------------------------------------------
dpias = Table(
    "dpias",
    metadata,
    Column("dataset", String(128), ForeignKey("datasets.name"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("schema_digest", String(80), nullable=False),
    Column("digest", String(80), nullable=False),
    Column("document", Text, nullable=False),
    Column("signed_by", String(200)),
    Column("signed_at", DateTime(timezone=True)),
)

# --- service jobs and login throttling (0016) ------------------------------------------------------
# A long operation submitted over HTTP: who asked, for which purpose, how far it got and how it ended.
# Operational state, not evidence: what the operation did is in the ledger (result carries its entry).
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("principal", String(128), nullable=False, index=True),
    Column("purpose", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # queued, running, succeeded, failed, cancelled
    Column("done", BigInteger, nullable=False),
    Column("total", BigInteger),
    Column("unit", String(32)),
    Column("result_json", Text),
    Column("problem_json", Text),
    Column("cancel_requested", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)

# A refused password login, kept for the rate limit per principal and per address (the refusal itself
# is in the ledger as auth.refused); rows older than the window are deleted as new ones arrive.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("principal", String(128), nullable=False, index=True),
    Column("address", String(64), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
)

# --- the data-subject portal (0017) ----------------------------------------------------------------
# A request or consent withdrawal submitted at /portal: pending until the one-time code sent to the
# address given is entered, then linked to the register (request_id). The reference, the follow-up code
# and the one-time code are kept as keyed digests; the identifier and an export only sealed under a key
# derived from the workspace key and `key_salt` (deleting the row destroys them). The subject is named
# by pseudonym, whether or not they hold data here.
portal_requests = Table(
    "portal_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("reference_hash", String(80), nullable=False, unique=True),
    Column("follow_hash", String(80)),
    Column("kind", String(32), nullable=False),
    Column("purpose", String(128)),
    Column("subject", String(80), nullable=False),
    Column("key_salt", LargeBinary, nullable=False),
    Column("identifier_enc", LargeBinary),
    Column("code_hash", String(80)),
    Column("code_expires_at", DateTime(timezone=True)),
    Column("code_attempts", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # pending, verified, done, locked
    Column("request_id", String(32), index=True),
    Column("outcome", String(200)),
    Column("export_enc", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("verified_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
)

# A submission or a refused code or follow-up, kept for the portal's limits per address and per
# subject (`what`: submit, code, follow; `key`: an address or a pseudonym); older rows are deleted.
portal_attempts = Table(
    "portal_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("what", String(16), nullable=False),
    Column("key", String(80), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
)

# --- external datasets (0018) ----------------------------------------------------------------------
# A dataset whose rows stay in the organisation's lake (Parquet, a catalogue table): where it is, which
# system owns it (and the X25519 key its erasure requests are sealed to), and the physical types its
# schema was checked against at registration.
external_sources = Table(
    "external_sources",
    metadata,
    Column("dataset", String(128), ForeignKey("datasets.name"), primary_key=True),
    Column("kind", String(16), nullable=False),  # parquet, table
    Column("location", Text, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("owner_key", String(80), nullable=False),
    Column("erasure_days", Integer, nullable=False),
    Column("time_column", String(63), nullable=True),
    Column("physical_json", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A subject enrolled in an external dataset, and its link: HMAC-SHA256 under the dataset's link key of
# the id the lake holds, which is all that the Spark executors compare against.
external_subjects = Table(
    "external_subjects",
    metadata,
    Column("dataset", String(128), ForeignKey("datasets.name"), primary_key=True),
    Column("subject_id", Id, ForeignKey("subjects.id"), primary_key=True, autoincrement=False, index=True),
    Column("link", LargeBinary(32), nullable=False),
    Column("enrolled_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dataset", "link", name="uq_external_subjects_dataset_link"),
)

# An erased subject's rows that the owner system must delete: the link (to check it was done), the
# pseudonym (the erasure event names), the request sealed to the owner's key (kept until verified gone).
external_erasures = Table(
    "external_erasures",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("dataset", String(128), ForeignKey("datasets.name"), nullable=False, index=True),
    Column("link", LargeBinary(32), nullable=False),
    Column("subject", String(80), nullable=False),
    Column("erase_seq", BigInteger, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("request_sealed", LargeBinary, nullable=True),
    Column("exported_at", DateTime(timezone=True), nullable=True),
    Column("checked_at", DateTime(timezone=True), nullable=True),
    Column("check_seq", BigInteger, nullable=True),
    Column("state", String(16), nullable=False),  # pending, gone, present
)
