"""letters the CRM asks maild to send: outbox columns, outbox_attachments, and a wake-up on PostgreSQL

The CRM inserts a row of kind ``send`` into ``outbox`` (with its files in ``outbox_attachments``);
on PostgreSQL a trigger notifies channel ``maild_outbox`` so the dispatcher picks it up at once,
and the outbox's bookkeeping columns get defaults so the CRM need not fill them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_TEXT_COLUMNS = ("mail_to", "mail_cc", "mail_bcc", "subject", "text_body", "html_body")

_NOTIFY = """
CREATE FUNCTION maild_outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('maild_outbox', NEW.id::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql
"""

_DEFAULTS = {
    "status": "'pending'",
    "attempts": "0",
    "seq": "0",
    "target": "''",
    "payload": "'{}'::json",
    "next_attempt_at": "now()",
    "created_at": "now()",
    "updated_at": "now()",
}


def upgrade() -> None:
    op.add_column("outbox", sa.Column("author_login", sa.String(length=255), nullable=True))
    for column in _TEXT_COLUMNS:
        op.add_column("outbox", sa.Column(column, sa.Text(), nullable=True))
    op.add_column("outbox", sa.Column("attach_letter_ids", sa.JSON(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE outbox ADD COLUMN lead_id INTEGER "
            "CONSTRAINT fk_outbox_lead_id_leads REFERENCES leads (id) ON DELETE SET NULL"
        )
    else:
        op.add_column("outbox", sa.Column("lead_id", sa.BigInteger(), nullable=True))
        op.create_foreign_key(
            "fk_outbox_lead_id_leads", "outbox", "leads", ["lead_id"], ["id"], ondelete="SET NULL"
        )
        for column, default in _DEFAULTS.items():
            op.execute(f"ALTER TABLE outbox ALTER COLUMN {column} SET DEFAULT {default}")
        op.execute(_NOTIFY)
        op.execute(
            "CREATE TRIGGER maild_outbox_notify AFTER INSERT ON outbox "
            "FOR EACH ROW EXECUTE FUNCTION maild_outbox_notify()"
        )
    op.create_table(
        "outbox_attachments",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("outbox_id", _ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=1000), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("letter_id", _ID, nullable=True),
        sa.Column("letter_position", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["letter_id"],
            ["letters.id"],
            name=op.f("fk_outbox_attachments_letter_id_letters"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["outbox.id"],
            name=op.f("fk_outbox_attachments_outbox_id_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_attachments")),
        sa.UniqueConstraint(
            "outbox_id", "position", name=op.f("uq_outbox_attachments_outbox_id_position")
        ),
    )


def downgrade() -> None:
    op.drop_table("outbox_attachments")
    columns = ("lead_id", "attach_letter_ids", *_TEXT_COLUMNS, "author_login")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot drop lead_id's foreign key: outbox is copied without these columns
        # (maild.db.migrate runs this with foreign keys off).
        with op.batch_alter_table("outbox", recreate="always") as batch_op:
            for column in columns:
                batch_op.drop_column(column)
        return
    op.execute("DROP TRIGGER IF EXISTS maild_outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS maild_outbox_notify()")
    for column in _DEFAULTS:
        op.execute(f"ALTER TABLE outbox ALTER COLUMN {column} DROP DEFAULT")
    op.drop_constraint("fk_outbox_lead_id_leads", "outbox", type_="foreignkey")
    for column in columns:
        op.drop_column("outbox", column)
