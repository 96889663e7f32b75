"""record keys: a keyed digest (HMAC under the workspace's pseudonym key) of the values that name a
record (the dataset's declared record_key, or the subject and all values without one), unique per
dataset, so that an ingest finds a record already stored without decrypting anything

Records stored before this revision have none (NULL never conflicts): an ingest does not match them.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as t:
        t.add_column(sa.Column("record_key", sa.LargeBinary(32), nullable=True))
    op.create_index("ux_records_dataset_key", "records", ["dataset", "record_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_records_dataset_key", "records")
    with op.batch_alter_table("records") as t:
        t.drop_column("record_key")
