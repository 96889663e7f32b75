"""the data-subject portal: submissions awaiting a one-time code and the requests people follow
(references, codes and identifiers kept only hashed or sealed), and the attempts its limits count

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "portal_requests",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("reference_hash", sa.String(80), nullable=False),
        sa.Column("follow_hash", sa.String(80)),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("purpose", sa.String(128)),
        sa.Column("subject", sa.String(80), nullable=False),
        sa.Column("key_salt", sa.LargeBinary, nullable=False),
        sa.Column("identifier_enc", sa.LargeBinary),
        sa.Column("code_hash", sa.String(80)),
        sa.Column("code_expires_at", tz),
        sa.Column("code_attempts", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(32)),
        sa.Column("outcome", sa.String(200)),
        sa.Column("export_enc", sa.LargeBinary),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("verified_at", tz),
        sa.Column("closed_at", tz),
        sa.PrimaryKeyConstraint("id", name="pk_portal_requests"),
        sa.UniqueConstraint("reference_hash", name="uq_portal_requests_reference_hash"),
    )
    op.create_index("ix_portal_requests_request_id", "portal_requests", ["request_id"])
    op.create_index("ix_portal_requests_created_at", "portal_requests", ["created_at"])
    op.create_table(
        "portal_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("what", sa.String(16), nullable=False),
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("at", tz, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_portal_attempts"),
    )
    op.create_index("ix_portal_attempts_key", "portal_attempts", ["key"])
    op.create_index("ix_portal_attempts_at", "portal_attempts", ["at"])


def downgrade() -> None:
    op.drop_table("portal_attempts")
    op.drop_table("portal_requests")
