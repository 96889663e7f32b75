"""ledger: Merkle log entries, stratified interior nodes, head, checkpoints, witnesses

Revision ID: 0002
Revises: 0001
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_ledger_entries"),
    )
    op.create_index("ix_ledger_entries_kind", "ledger_entries", ["kind"])
    op.create_table(
        "ledger_nodes",
        sa.Column("level", sa.SmallInteger, nullable=False, autoincrement=False),
        sa.Column("idx", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_ledger_nodes"),
    )
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("frontier", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_head"),
    )
    head = sa.table(
        "ledger_head",
        sa.column("id", sa.Integer),
        sa.column("size", sa.BigInteger),
        sa.column("root", sa.LargeBinary),
        sa.column("frontier", sa.LargeBinary),
    )
    # the empty tree: size 0, root SHA-256(""), no frontier; one row that appends lock and update
    op.bulk_insert(head, [{"id": 1, "size": 0, "root": hashlib.sha256(b"").digest(), "frontier": b""}])
    op.create_table(
        "ledger_checkpoints",
        sa.Column("size", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_ledger_checkpoints"),
    )
    op.create_table(
        "ledger_witnesses",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("vkey", sa.Text, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_ledger_witnesses"),
    )
    op.create_table(
        "ledger_cosignatures",
        sa.Column("size", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("witness", sa.String(128), nullable=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", "witness", name="pk_ledger_cosignatures"),
    )


def downgrade() -> None:
    for name in ("ledger_cosignatures", "ledger_witnesses", "ledger_checkpoints", "ledger_head", "ledger_nodes"):
        op.drop_table(name)
    op.drop_index("ix_ledger_entries_kind", "ledger_entries")
    op.drop_table("ledger_entries")
