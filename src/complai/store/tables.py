"""Table definitions (SQLAlchemy Core). Migrations under migrations/versions must produce exactly these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

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
)

# --- ledger ------------------------------------------------------------------------------------
# Entries are the Merkle leaves. Interior nodes are kept only at every STRATUM-th level (see
# ledger/log.py): enough to answer any proof in O(log n) reads while adding ~1/15 row per append.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False, index=True),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("data", LargeBinary, nullable=False),
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
