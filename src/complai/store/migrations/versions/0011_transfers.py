"""transfers: a sharing agreement records the recipient's jurisdiction and the transfer mechanism

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agreements") as t:
        t.add_column(sa.Column("recipient_jurisdiction", sa.String(32), nullable=True))
        t.add_column(sa.Column("transfer_mechanism", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agreements") as t:
        t.drop_column("transfer_mechanism")
        t.drop_column("recipient_jurisdiction")
