"""The database layer on SQLite and PostgreSQL: migrations, exactly-once storage, UIDVALIDITY, retries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from maild.core.letter import FetchedMessage
from maild.db import migrate, repo
from maild.db.engine import create_engine
from maild.db.tables import Attachment, Base, Folder, Letter
from maild.errors import ParseError, SchemaOutOfDate
from maild.ingest.parse import parse_letter
from maild.ingest.workers import ParserPool
from maild.pipeline import FolderStore, prepare_folders, retry_failed
from maild.settings import Config
from maild.testing.samples import MALFORMED, demo_mailboxes

pytestmark = pytest.mark.usefixtures("db_url")


def config_for(accounts: int = 1, folders: int = 1) -> Config:
    return Config.model_validate(
        {
            "accounts": [
                {
                    "name": f"acc{a}",
                    "address": f"acc{a}@corp.example",
                    "imap": {
                        "host": "127.0.0.1",
                        "security": "none",
                        "username": f"acc{a}",
                        "password_env": "UNUSED",
                    },
                    "folders": {"watch": [f"F{f}" for f in range(folders)]},
                }
                for a in range(accounts)
            ]
        }
    )


async def store_for(
    sessions: async_sessionmaker[AsyncSession],
    config: Config,
    account: str = "acc0",
    folder: str = "F0",
) -> FolderStore:
    ids = await prepare_folders(sessions, config)
    store = FolderStore(
        sessions=sessions, account=account, folder=folder, folder_id=ids[(account, folder)]
    )
    await store.set_uidvalidity(100, changed=False)
    return store


def fetched(uid: int, raw: bytes) -> FetchedMessage:
    return FetchedMessage(uid=uid, raw=raw, size=len(raw), flags=("\\Seen",))


ALL_SAMPLES = [raw for raws in demo_mailboxes().values() for raw in raws]
SAMPLES = [raw for raw in ALL_SAMPLES if raw != MALFORMED["nested too deep"]]


INLINE_LETTER_LINKS = {
    ("lead_id", "leads", "SET NULL"),
    ("potential_client_id", "potential_clients", "SET NULL"),
    ("client_id", "clients", "SET NULL"),
    ("contact_person_id", "contact_persons", "SET NULL"),
}


def _inline_letter_fk(item: Any) -> bool:
    """Tell a drift item SQLite's reflection invents for the foreign keys 0004/0006 add inline."""
    if item[0] not in ("add_fk", "remove_fk"):
        return False
    fk = item[1]
    columns = {column.name for column in fk.columns}
    if fk.table.name == "outbox":
        return columns == {"lead_id"}
    return fk.table.name == "letters" and bool(columns & {c for c, _, _ in INLINE_LETTER_LINKS})


def _letter_links(sync_conn: Any) -> set[tuple[str, str, str]]:
    """Read the foreign keys SQLite really enforces on the letters' lead and party columns."""
    rows = sync_conn.exec_driver_sql("PRAGMA foreign_key_list(letters)").all()
    links = {c for c, _, _ in INLINE_LETTER_LINKS}
    return {(row[3], row[2], row[6]) for row in rows if row[3] in links}


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    """After `db upgrade` the schema equals the models: no drift for autogenerate to find."""

    def diff(sync_conn: Any) -> list[Any]:
        context = MigrationContext.configure(
            sync_conn, opts={"version_table": migrate.VERSION_TABLE, "compare_type": True}
        )
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as conn:
        drift = await conn.run_sync(diff)
        if engine.dialect.name == "sqlite":
            drift = [d for d in drift if not _inline_letter_fk(d)]
            assert await conn.run_sync(_letter_links) == INLINE_LETTER_LINKS
        assert drift == []
    assert await migrate.current_revision(engine) == migrate.head_revision()
    await migrate.upgrade(engine)  # a second upgrade is a no-op
    await migrate.require_current(engine)


async def test_unmigrated_database_is_refused(db_url: str) -> None:
    """A daemon with migrate_on_start off refuses a database that was never migrated."""
    engine = create_engine(db_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="maild db upgrade"):
            await migrate.require_current(engine)
    finally:
        await engine.dispose()


async def test_store_is_exactly_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Storing the same UID twice keeps one row, and the cursor moves with the letter."""
    store = await store_for(sessions, config_for())
    raw = SAMPLES[1]
    assert await store.store(fetched(1, raw), parse_letter(raw), None) == "stored"
    assert await store.store(fetched(1, raw), parse_letter(raw), None) == "duplicate"
    assert (await store.cursor()).last_uid == 1
    async with sessions() as session:
        assert (await session.execute(select(func.count()).select_from(Letter))).scalar() == 1
        letter = (await session.execute(select(Letter))).scalar_one()
        attachments = (await session.execute(select(Attachment))).scalars().all()
    assert letter.raw == raw and letter.status == "stored" and letter.imap_flags == ["\\Seen"]
    assert letter.subject.startswith("Re: Quote") and letter.in_reply_to.startswith("<")
    assert [a.filename for a in attachments] == ["quote-X42.pdf"]


async def test_every_sample_stores(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Every sample letter stores on both databases; the parser bomb is kept raw as failed."""
    store = await store_for(sessions, config_for())
    outcomes = []
    for uid, raw in enumerate(ALL_SAMPLES, start=1):
        try:
            parsed, error = parse_letter(raw), None
        except ParseError as exc:
            parsed, error = None, str(exc)
        outcomes.append(await store.store(fetched(uid, raw), parsed, error))
    assert outcomes.count("failed") == 1
    assert outcomes.count("stored") == len(ALL_SAMPLES) - 1
    assert (await store.cursor()).last_uid == len(ALL_SAMPLES)


async def test_unstorable_letter_is_kept_raw(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A letter whose parse failed is kept raw, flagged failed with the reason, and the cursor moves."""
    store = await store_for(sessions, config_for())
    raw = b"\x00\x01garbage"
    assert await store.store(fetched(7, raw), None, "cannot parse letter: boom") == "failed"
    async with sessions() as session:
        letter = (await session.execute(select(Letter))).scalar_one()
    assert (letter.status, letter.error, letter.raw) == ("failed", "cannot parse letter: boom", raw)
    assert (await store.cursor()).last_uid == 7


async def test_retry_failed_reparses(sessions: async_sessionmaker[AsyncSession]) -> None:
    """`letters retry-failed` turns a failed letter into a stored one from its raw bytes."""
    store = await store_for(sessions, config_for())
    await store.store(fetched(1, SAMPLES[0]), None, "parser process died")
    parser = ParserPool(1)
    try:
        report = await retry_failed(sessions, parser)
    finally:
        parser.close()
    assert len(report.fixed) == 1 and not report.still_failing
    async with sessions() as session:
        letter = (await session.execute(select(Letter))).scalar_one()
    assert letter.status == "stored" and letter.error is None
    assert letter.from_address == "anna.petrova@client-one.example"


async def test_uidvalidity_change_rekeys_without_duplicates(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """After a UIDVALIDITY change the same letters under new UIDs are re-keyed, new ones inserted."""
    store = await store_for(sessions, config_for())
    for uid, raw in enumerate(SAMPLES[:3], start=1):
        await store.store(fetched(uid, raw), parse_letter(raw), None)
    await store.set_uidvalidity(200, changed=True)
    assert (await store.cursor()).last_uid == 0
    outcomes = [
        await store.store(fetched(uid, raw), parse_letter(raw), None)
        for uid, raw in enumerate(SAMPLES[:4], start=1)
    ]
    assert outcomes == ["rekeyed", "rekeyed", "rekeyed", "stored"]
    async with sessions() as session:
        rows = (await session.execute(select(Letter.uidvalidity, Letter.uid))).all()
        folder = (await session.execute(select(Folder))).scalar_one()
    assert sorted(rows) == [(200, 1), (200, 2), (200, 3), (200, 4)]
    assert folder.uidvalidity_changes == 1


async def test_concurrent_folders_lose_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Six folders storing at once keep every letter and every cursor (SQLite: BEGIN IMMEDIATE)."""
    config = config_for(accounts=3, folders=2)
    stores = [
        await store_for(sessions, config, f"acc{a}", f"F{f}") for a in range(3) for f in range(2)
    ]
    per_folder = 40

    async def fill(store: FolderStore) -> None:
        for uid in range(1, per_folder + 1):
            raw = SAMPLES[uid % len(SAMPLES)] + f"X-Seq: {store.folder_id}-{uid}\r\n".encode()
            await store.store(fetched(uid, raw), parse_letter(raw), None)

    await asyncio.gather(*(fill(s) for s in stores))
    async with sessions() as session:
        total = (await session.execute(select(func.count()).select_from(Letter))).scalar()
        cursors = (await session.execute(select(Folder.last_uid))).scalars().all()
    assert total == per_folder * len(stores)
    assert cursors == [per_folder] * len(stores)


async def test_raw_is_lz4_on_postgresql(engine: AsyncEngine) -> None:
    """On PostgreSQL with lz4, letters.raw is compressed with lz4, the cheap codec, not pglz."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL storage setting")
    async with engine.connect() as conn:
        has_lz4 = (
            await conn.exec_driver_sql(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
            )
        ).scalar()
        codec = (
            await conn.exec_driver_sql(
                "SELECT attcompression FROM pg_attribute "
                "WHERE attrelid = 'letters'::regclass AND attname = 'raw'"
            )
        ).scalar()
    assert codec in ((b"l", "l") if has_lz4 else (b"", "", None))


async def test_refused_row_is_kept_raw_and_others_stored(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the database refuses one parsed letter of a group, the others store and it is kept raw."""
    store = await store_for(sessions, config_for())
    real_insert = repo.insert_letters
    poisoned = SAMPLES[2]

    async def refuse_one(session: AsyncSession, folder: Any, items: Any, **kw: Any) -> Any:
        if any(i.parsed is not None and i.message.raw == poisoned for i in items):
            raise ValueError("row refused")
        return await real_insert(session, folder, items, **kw)

    monkeypatch.setattr(repo, "insert_letters", refuse_one)
    items = [(fetched(uid, raw), parse_letter(raw), None) for uid, raw in enumerate(SAMPLES[:4], 1)]
    assert await store.store_many(items) == ["stored", "stored", "failed", "stored"]
    async with sessions() as session:
        failed = (
            await session.execute(select(Letter).where(Letter.status == "failed"))
        ).scalar_one()
    assert failed.raw == poisoned and "row refused" in (failed.error or "")
    assert (await store.cursor()).last_uid == 4
