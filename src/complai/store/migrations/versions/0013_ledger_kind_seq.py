"""ledger entries indexed by (kind, seq): reading the entries of a few kinds from a sequence number on
(spend events since a budget's mark, checkpoint events) costs the matching entries only

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ledger_entries_kind_seq", "ledger_entries", ["kind", "seq"])
    op.drop_index("ix_ledger_entries_kind", "ledger_entries")


def downgrade() -> None:
    op.create_index("ix_ledger_entries_kind", "ledger_entries", ["kind"])
    op.drop_index("ix_ledger_entries_kind_seq", "ledger_entries")
