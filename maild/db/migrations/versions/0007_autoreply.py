"""autoreply_log, autoreply_state, letters.autoreply_outcome

The autoresponder's throttle (the last reply per account and sender, claimed atomically and
released when the reply finally fails), the manual off switch of an account's period, and what
the autoresponder decided for each letter.

Note for later migrations: on SQLite, autogenerate misreads the inline foreign keys 0004 and
0006 added to ``letters`` and ``outbox`` and proposes to drop and recreate them; leave those out.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "autoreply_log",
        sa.Column("account_id", _ID, nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("letter_id", sa.BigInteger(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_letter_id", sa.BigInteger(), nullable=True),
        sa.Column("previous_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_autoreply_log_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "sender", name=op.f("pk_autoreply_log")),
    )
    op.create_table(
        "autoreply_state",
        sa.Column("account_id", _ID, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("switched_off_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("switched_off_by", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_autoreply_state_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_autoreply_state")),
    )
    op.add_column(
        "letters",
        sa.Column("autoreply_outcome", sa.String(length=500), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_column("letters", "autoreply_outcome")
    op.drop_table("autoreply_state")
    op.drop_table("autoreply_log")
