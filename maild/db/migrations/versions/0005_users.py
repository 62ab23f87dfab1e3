"""users, user_sender_names, letters.responsible_reason

CRM users and every personal sender name each has used from a shared account (so a reply
addressed to a name changed since still finds its user), and why a letter has its Responsible.

Note for later migrations: on SQLite, autogenerate misreads the inline foreign keys 0004 added
to ``letters`` and proposes to drop and recreate them; leave those lines out.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("login", sa.String(length=255), nullable=False),
        sa.Column("full_name", sa.String(length=500), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("font", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("login", name=op.f("uq_users_login")),
    )
    op.create_table(
        "user_sender_names",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("account_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("name_key", sa.String(length=500), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_user_sender_names_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_sender_names_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_sender_names")),
        sa.UniqueConstraint(
            "user_id",
            "account_id",
            "name_key",
            name=op.f("uq_user_sender_names_user_id_account_id_name_key"),
        ),
    )
    op.create_index(
        "ix_user_sender_names_account_id_name_key",
        "user_sender_names",
        ["account_id", "name_key"],
        unique=False,
    )
    op.add_column(
        "letters",
        sa.Column("responsible_reason", sa.String(length=500), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_column("letters", "responsible_reason")
    op.drop_index("ix_user_sender_names_account_id_name_key", table_name="user_sender_names")
    op.drop_table("user_sender_names")
    op.drop_table("users")
