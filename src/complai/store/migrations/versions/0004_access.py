"""access: principals, role grants, API tokens, policy rules, sharing agreements; the owner principal

Revision ID: 0004
Revises: 0003
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    principals = op.create_table(
        "principals",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_principals"),
    )
    grants = op.create_table(
        "role_grants",
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("granted_by", sa.String(128), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal", "role", name="pk_role_grants"),
        sa.ForeignKeyConstraint(["principal"], ["principals.name"], name="fk_role_grants_principal_principals"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.ForeignKeyConstraint(["principal"], ["principals.name"], name="fk_tokens_principal_principals"),
    )
    op.create_table(
        "policy_rules",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("domain", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("purpose", sa.String(128), nullable=False),
        sa.Column("effect", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_rules"),
        sa.UniqueConstraint("subject", "domain", "action", "purpose", "effect", name="uq_policy_rules_rule"),
    )
    op.create_table(
        "agreements",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(200), nullable=False),
        sa.Column("recipient_key", sa.Text, nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("purpose", sa.String(128), nullable=False),
        sa.Column("fields_json", sa.Text, nullable=False),
        sa.Column("deid_json", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_uses", sa.Integer, nullable=False),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agreements"),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_agreements_dataset_datasets"),
    )
    # every workspace has its owner; earlier workspaces acted as "owner" implicitly
    now = datetime.now(UTC)
    op.bulk_insert(principals, [{"name": "owner", "kind": "human", "created_at": now, "created_by": "system"}])
    op.bulk_insert(grants, [{"principal": "owner", "role": "owner", "granted_by": "system", "granted_at": now}])


def downgrade() -> None:
    for name in ("agreements", "policy_rules", "tokens", "role_grants", "principals"):
        op.drop_table(name)
