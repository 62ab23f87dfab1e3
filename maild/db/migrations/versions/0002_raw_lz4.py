"""letters.raw compressed with lz4 on PostgreSQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

The default TOAST compression (pglz) cost PostgreSQL about 0.9 ms of CPU per
stored letter in the ingest benchmark; lz4 cost 0.33 ms. Only on a server that
offers lz4 (PostgreSQL 14+ built with it); elsewhere nothing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_HAS_LZ4 = sa.text(
    "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
)


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    return bool(bind.execute(_HAS_LZ4).scalar())


def upgrade() -> None:
    if _lz4_available():
        op.execute("ALTER TABLE letters ALTER COLUMN raw SET COMPRESSION lz4")


def downgrade() -> None:
    if _lz4_available():
        op.execute("ALTER TABLE letters ALTER COLUMN raw SET COMPRESSION DEFAULT")
