"""The tables maild owns in the database shared with the CRM; docs/schema.md documents each column."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

LETTER_STATUSES = ("stored", "failed", "oversize")


def utcnow() -> datetime:
    """Give an aware UTC timestamp, the only kind stored."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Store aware UTC datetimes and read them back aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        """Normalise to UTC before writing."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        """Attach UTC to what SQLite hands back naive."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base with deterministic constraint names for migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    """A mail account from config, mirrored so the CRM can join letters to it."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    address: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Folder(Base):
    """One watched IMAP folder and its cursor: UIDVALIDITY and the last UID stored."""

    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    first_sync_done: Mapped[bool] = mapped_column(Boolean, default=False)
    uidvalidity_changes: Mapped[int] = mapped_column(Integer, default=0)
    last_synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    lead_source: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Which `maild run` process polls the folder, until when; see maild/db/leases.py.
    lease_owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    lease_taken_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Letter(Base):
    """One letter, exactly once per (folder, UIDVALIDITY, UID), with its raw bytes kept."""

    __tablename__ = "letters"
    __table_args__ = (
        UniqueConstraint("folder_id", "uidvalidity", "uid"),
        Index("ix_letters_message_id", "message_id"),
        Index("ix_letters_from_address", "from_address"),
        Index("ix_letters_status", "status"),
        Index("ix_letters_folder_sha256", "folder_id", "sha256"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    direction: Mapped[str] = mapped_column(String(8), default="in")
    status: Mapped[str] = mapped_column(String(16), default="stored")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    message_id: Mapped[str] = mapped_column(String(998), default="")
    in_reply_to: Mapped[str] = mapped_column(String(998), default="")
    reference_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    from_address: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(500), default="")
    to_addresses: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    cc_addresses: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    reply_to_addresses: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    received_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    text_body: Mapped[str] = mapped_column(Text, default="")
    html_body: Mapped[str] = mapped_column(Text, default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    defects: Mapped[list[str]] = mapped_column(JSON, default=list)
    imap_flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_sync: Mapped[bool] = mapped_column(Boolean, default=False)
    marked_for_deletion: Mapped[bool] = mapped_column(Boolean, default=False)
    responsible_login: Mapped[str | None] = mapped_column(String(255), nullable=True)
    responsible_reason: Mapped[str] = mapped_column(String(500), default="")
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="SET NULL"), nullable=True, index=True
    )
    lead_reason: Mapped[str] = mapped_column(String(500), default="")
    autoreply_outcome: Mapped[str] = mapped_column(String(500), default="")
    potential_client_id: Mapped[int | None] = mapped_column(
        ForeignKey("potential_clients.id", ondelete="SET NULL"), nullable=True, index=True
    )
    client_id: Mapped[int | None] = mapped_column(
        ForeignKey("clients.id", ondelete="SET NULL"), nullable=True, index=True
    )
    contact_person_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact_persons.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Attachment(Base):
    """One attachment's listing; its content stays inside the letter's raw bytes."""

    __tablename__ = "attachments"
    __table_args__ = (UniqueConstraint("letter_id", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    letter_id: Mapped[int] = mapped_column(ForeignKey("letters.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(1000), default="")
    content_type: Mapped[str] = mapped_column(String(255), default="application/octet-stream")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    content_id: Mapped[str] = mapped_column(String(998), default="")
    disposition: Mapped[str] = mapped_column(String(32), default="")
    sha256: Mapped[str] = mapped_column(String(64), default="")


OUTBOX_STATUSES = ("pending", "done", "dead")


class RuleHit(Base):
    """One rule that matched one letter, with the effects it asked for: the audit trail."""

    __tablename__ = "rule_hits"
    __table_args__ = (Index("ix_rule_hits_letter_id", "letter_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    letter_id: Mapped[int] = mapped_column(ForeignKey("letters.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(String(200))
    ruleset_version: Mapped[str] = mapped_column(String(64))
    effects: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class OutboxItem(Base):
    """One effect to perform outside the database (send, move, flag), at most once by its key."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("idempotency_key"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_letter_id", "letter_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    letter_id: Mapped[int | None] = mapped_column(
        ForeignKey("letters.id", ondelete="CASCADE"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(998), default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    seq: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # A letter the CRM asks maild to send (kind "send"); see docs/schema.md.
    author_login: Mapped[str | None] = mapped_column(String(255), nullable=True)
    mail_to: Mapped[str | None] = mapped_column(Text, nullable=True)
    mail_cc: Mapped[str | None] = mapped_column(Text, nullable=True)
    mail_bcc: Mapped[str | None] = mapped_column(Text, nullable=True)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    text_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    html_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="SET NULL"), nullable=True
    )
    attach_letter_ids: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)


class OutboxAttachment(Base):
    """A file the CRM attaches to a letter it asks maild to send: its bytes, or a stored letter's part."""

    __tablename__ = "outbox_attachments"
    __table_args__ = (UniqueConstraint("outbox_id", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)
    filename: Mapped[str] = mapped_column(String(1000), default="")
    content_type: Mapped[str] = mapped_column(String(255), default="application/octet-stream")
    content: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    letter_id: Mapped[int | None] = mapped_column(
        ForeignKey("letters.id", ondelete="SET NULL"), nullable=True
    )
    letter_position: Mapped[int | None] = mapped_column(Integer, nullable=True)


LEAD_STATUSES = ("new", "accepted", "rejected", "converted")
CLIENT_KINDS = ("legal", "individual")


class Client(Base):
    """A client of the business: a legal entity (with contact persons) or an individual."""

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), default="individual")
    name: Mapped[str] = mapped_column(String(500), default="")
    name_key: Mapped[str] = mapped_column(String(500), default="", index=True)
    email: Mapped[str] = mapped_column(String(320), default="", index=True)
    phone: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class ContactPerson(Base):
    """A person at a client (legal entity) that letters come from."""

    __tablename__ = "contact_persons"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    full_name: Mapped[str] = mapped_column(String(500), default="")
    email: Mapped[str] = mapped_column(String(320), default="", index=True)
    phone: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class PotentialClient(Base):
    """Someone who wrote in but is not a client yet; keeps a link to what it was converted into."""

    __tablename__ = "potential_clients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    full_name: Mapped[str] = mapped_column(String(500), default="")
    company: Mapped[str] = mapped_column(String(500), default="")
    email: Mapped[str] = mapped_column(String(320), default="", index=True)
    phone: Mapped[str] = mapped_column(String(64), default="")
    first_letter_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    client_id: Mapped[int | None] = mapped_column(
        ForeignKey("clients.id", ondelete="SET NULL"), nullable=True, index=True
    )
    contact_person_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact_persons.id", ondelete="SET NULL"), nullable=True
    )
    converted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Lead(Base):
    """A request (lead): the letter that opened it, its thread's letters point back at it."""

    __tablename__ = "leads"
    __table_args__ = (
        UniqueConstraint("number"),
        Index("ix_leads_folder_id_status", "folder_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    number: Mapped[int] = mapped_column(BigInteger)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    first_letter_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    sender_address: Mapped[str] = mapped_column(String(320), default="")
    sender_name: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[str] = mapped_column(String(16), default="new")
    reason: Mapped[str] = mapped_column(String(500), default="")
    responsible_login: Mapped[str | None] = mapped_column(String(255), nullable=True)
    potential_client_id: Mapped[int | None] = mapped_column(
        ForeignKey("potential_clients.id", ondelete="SET NULL"), nullable=True, index=True
    )
    client_id: Mapped[int | None] = mapped_column(
        ForeignKey("clients.id", ondelete="SET NULL"), nullable=True, index=True
    )
    contact_person_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact_persons.id", ondelete="SET NULL"), nullable=True
    )
    status_changed_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status_scenario: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Scenario(Base):
    """A CRM workplace scenario ("My sales", "Support") that shows leads from chosen folders."""

    __tablename__ = "scenarios"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class ScenarioFolder(Base):
    """One folder whose leads a scenario shows."""

    __tablename__ = "scenario_folders"

    scenario_id: Mapped[int] = mapped_column(
        ForeignKey("scenarios.id", ondelete="CASCADE"), primary_key=True
    )
    folder_id: Mapped[int] = mapped_column(
        ForeignKey("folders.id", ondelete="CASCADE"), primary_key=True
    )


class Setting(Base):
    """A flag shared with the CRM, such as whether potential clients are in use."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class User(Base):
    """A CRM user: the CRM owns these rows; the config may declare users too."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    login: Mapped[str] = mapped_column(String(255), unique=True)
    full_name: Mapped[str] = mapped_column(String(500), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    font: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class UserSenderName(Base):
    """A personal sender name a user has sent with from a shared account, current or past."""

    __tablename__ = "user_sender_names"
    __table_args__ = (
        UniqueConstraint("user_id", "account_id", "name_key"),
        Index("ix_user_sender_names_account_id_name_key", "account_id", "name_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(500))
    name_key: Mapped[str] = mapped_column(String(500))
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AutoreplyLog(Base):
    """The auto-reply throttle: the last reply claimed or sent per (account, sender)."""

    __tablename__ = "autoreply_log"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    sender: Mapped[str] = mapped_column(String(320), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UtcDateTime)
    letter_id: Mapped[int] = mapped_column(BigInteger)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    previous_window_start: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    previous_letter_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    previous_sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class AutoreplyState(Base):
    """An account's auto-reply switched off by hand for one configured period."""

    __tablename__ = "autoreply_state"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(UtcDateTime)
    period_end: Mapped[datetime] = mapped_column(UtcDateTime)
    switched_off_at: Mapped[datetime] = mapped_column(UtcDateTime)
    switched_off_by: Mapped[str] = mapped_column(String(255), default="")


class MaildProcess(Base):
    """A running `maild run` process, alive while it renews: how many share the folders."""

    __tablename__ = "maild_processes"

    owner: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    alive_until: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


USE_POTENTIAL_CLIENTS = "use_potential_clients"

OWNED_TABLES = frozenset(Base.metadata.tables)
