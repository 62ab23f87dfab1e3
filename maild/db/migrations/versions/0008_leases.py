"""folders.lease_owner, lease_until, lease_taken_at and maild_processes

Several `maild run` processes share one PostgreSQL: each (account, folder) is polled by the one
process that holds its lease (the owner and the time it lasts until, renewed on the database's
clock), and every running process keeps a row in ``maild_processes`` so each can tell its share.
The new ``folders`` columns have no foreign keys, so SQLite adds them in place.

Note for later migrations: on SQLite, autogenerate misreads the inline foreign keys 0004 and
0006 added to ``letters`` and ``outbox`` and proposes to drop and recreate them; leave those out.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("folders", sa.Column("lease_owner", sa.String(length=255), nullable=True))
    op.add_column("folders", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("folders", sa.Column("lease_taken_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "maild_processes",
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alive_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_maild_processes")),
    )


def downgrade() -> None:
    op.drop_table("maild_processes")
    op.drop_column("folders", "lease_taken_at")
    op.drop_column("folders", "lease_until")
    op.drop_column("folders", "lease_owner")
