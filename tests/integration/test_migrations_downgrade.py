"""Every migration downgrades on SQLite and PostgreSQL to the schema its upgrade started from,
keeping every row the older schema can hold."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from maild.db import migrate
from maild.db.engine import create_engine, session_factory
from maild.db.tables import (
    Account,
    Attachment,
    AutoreplyLog,
    AutoreplyState,
    Client,
    ContactPerson,
    Folder,
    Lead,
    Letter,
    MaildProcess,
    OutboxAttachment,
    OutboxItem,
    PotentialClient,
    RuleHit,
    Scenario,
    ScenarioFolder,
    Setting,
    User,
    UserSenderName,
)
from maild.errors import DatabaseError

Schema = dict[str, Any]
Rows = dict[str, list[dict[str, Any]]]

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def revisions() -> list[str]:
    """Give every revision id, oldest first."""
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def _table_schema(inspector: Any, dialect: Any, table: str) -> dict[str, Any]:
    """Describe one table as the inspector sees it, in an order-free form."""
    fks = inspector.get_foreign_keys(table)
    return {
        "columns": [
            (c["name"], c["type"].compile(dialect=dialect), c["nullable"], c.get("default"))
            for c in inspector.get_columns(table)
        ],
        "pk": inspector.get_pk_constraint(table),
        "fks": sorted(
            (
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                tuple(fk["referred_columns"]),
                fk.get("options", {}).get("ondelete"),
            )
            for fk in fks
        ),
        "unique": sorted(
            (u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)
        ),
        "indexes": sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in inspector.get_indexes(table)
        ),
    }


def _extras(sync_conn: Any) -> list[str]:
    """List what the inspector does not show or misreads.

    That is triggers, functions, sequences and column compression on PostgreSQL, and on SQLite
    the foreign keys as it enforces them (reflection misreads the inline ones' actions).
    """
    if sync_conn.dialect.name == "sqlite":
        sql = (
            "SELECT 'fk ' || m.name || '.' || f.\"from\" || ' -> ' || f.\"table\" || ' ' "
            "|| f.on_delete FROM sqlite_master m, pragma_foreign_key_list(m.name) f "
            "WHERE m.type = 'table' "
            "UNION ALL SELECT type || ' ' || name FROM sqlite_master "
            "WHERE type IN ('trigger', 'view')"
        )
    else:
        sql = (
            "SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal "
            "UNION ALL SELECT 'function ' || proname FROM pg_proc "
            "WHERE pronamespace = 'public'::regnamespace "
            "UNION ALL SELECT 'sequence ' || sequence_name FROM information_schema.sequences "
            "UNION ALL SELECT 'compression ' || c.relname || '.' || a.attname || ' ' "
            "|| a.attcompression::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relnamespace = 'public'::regnamespace AND a.attcompression <> ''"
        )
    return sorted(str(row[0]) for row in sync_conn.exec_driver_sql(sql))


def _schema(sync_conn: Any) -> Schema:
    """Read the whole schema maild made, leaving out Alembic's version table."""
    inspector = sa.inspect(sync_conn)
    tables = sorted(set(inspector.get_table_names()) - {migrate.VERSION_TABLE})
    schema: Schema = {t: _table_schema(inspector, sync_conn.dialect, t) for t in tables}
    schema["(extras)"] = _extras(sync_conn)
    return schema


async def schema_of(engine: AsyncEngine) -> Schema:
    """Read the schema on a fresh connection."""
    async with engine.connect() as conn:
        return await conn.run_sync(_schema)


async def rows_of(engine: AsyncEngine, schema: Schema) -> Rows:
    """Read every row of every table in ``schema``, in a stable order."""
    rows: Rows = {}
    async with engine.connect() as conn:
        for table in tables_of(schema):
            query = sa.select(sa.text("*")).select_from(sa.table(table))
            found = [dict(r) for r in (await conn.execute(query)).mappings()]
            rows[table] = sorted(found, key=lambda r: repr(sorted(r.items())))
    return rows


def tables_of(schema: Schema) -> list[str]:
    """Give the table names of a schema read by ``schema_of``."""
    return [t for t in schema if t != "(extras)"]


def held_by(rows: Rows, schema: Schema) -> Rows:
    """Keep of ``rows`` (read at a newer revision) the tables and columns ``schema`` has."""
    held: Rows = {}
    for table in tables_of(schema):
        columns = [c[0] for c in schema[table]["columns"]]
        held[table] = [{c: row[c] for c in columns} for row in rows[table]]
    return held


async def fill(engine: AsyncEngine) -> None:
    """Put a row in every table at head, with every link set, as a running maild would."""
    later = NOW + timedelta(minutes=5)
    async with session_factory(engine).begin() as session:
        account = Account(name="sales", address="sales@corp.example", display_name="Sales")
        session.add(account)
        await session.flush()
        folder = Folder(
            account_id=account.id,
            name="INBOX",
            uidvalidity=7,
            last_uid=2,
            first_sync_done=True,
            lead_source=True,
            lease_owner="host:1:abc",
            lease_until=later,
            lease_taken_at=NOW,
        )
        client = Client(name="Acme", name_key="acme", email="info@acme.example")
        session.add_all([folder, client])
        await session.flush()
        person = ContactPerson(client_id=client.id, full_name="Anna", email="anna@acme.example")
        session.add(person)
        await session.flush()
        potential = PotentialClient(full_name="Ivan", email="ivan@new.example", client_id=client.id)
        session.add(potential)
        await session.flush()
        lead = Lead(
            number=1,
            account_id=account.id,
            folder_id=folder.id,
            subject="Quote",
            potential_client_id=potential.id,
            client_id=client.id,
            contact_person_id=person.id,
        )
        session.add(lead)
        await session.flush()
        letters = [
            Letter(
                account_id=account.id,
                folder_id=folder.id,
                uidvalidity=7,
                uid=uid,
                message_id=f"<{uid}@acme.example>",
                reference_ids=["<0@acme.example>"],
                to_addresses=[{"name": "Sales", "address": "sales@corp.example"}],
                subject=f"Quote {uid}",
                sent_at=NOW,
                raw=b"Subject: Quote\r\n\r\n" + bytes(range(256)),
                size=274,
                sha256="ab" * 32,
                imap_flags=["\\Seen"],
                responsible_login="anna",
                responsible_reason="rule vip",
                lead_id=lead.id,
                lead_reason="folder INBOX is a lead source",
                potential_client_id=potential.id,
                client_id=client.id,
                contact_person_id=person.id,
                autoreply_outcome="queued: reply to ivan@new.example",
            )
            for uid in (1, 2)
        ]
        session.add_all(letters)
        await session.flush()
        first = letters[0].id
        outbox = OutboxItem(
            account_id=account.id,
            letter_id=first,
            kind="send",
            target="ivan@new.example",
            payload={"k": 1},
            idempotency_key="send-1",
            author_login="anna",
            mail_to="ivan@new.example",
            subject="Re: Quote",
            text_body="Hello",
            lead_id=lead.id,
            attach_letter_ids=[first],
        )
        scenario = Scenario(name="web", title="Web")
        user = User(login="anna", full_name="Anna", email="anna@corp.example")
        session.add_all([outbox, scenario, user])
        await session.flush()
        session.add_all(
            [
                Attachment(letter_id=first, position=0, filename="quote.pdf", size=10),
                RuleHit(letter_id=first, rule="vip", ruleset_version="v1", effects=[{"k": 1}]),
                OutboxAttachment(outbox_id=outbox.id, filename="a.txt", content=b"a"),
                ScenarioFolder(scenario_id=scenario.id, folder_id=folder.id),
                Setting(key="use_potential_clients", value="1"),
                UserSenderName(user_id=user.id, account_id=account.id, name="A", name_key="a"),
                AutoreplyLog(
                    account_id=account.id,
                    sender="ivan@new.example",
                    window_start=NOW,
                    letter_id=first,
                ),
                AutoreplyState(
                    account_id=account.id,
                    period_start=NOW,
                    period_end=later,
                    switched_off_at=NOW,
                    switched_off_by="anna",
                ),
                MaildProcess(owner="host:1:abc", host="host", pid=1),
            ]
        )


async def foreign_keys_enforced(engine: AsyncEngine) -> bool:
    """Tell whether a pooled SQLite connection still enforces foreign keys after a migration."""
    async with engine.connect() as conn:
        return bool((await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar())


async def test_each_downgrade_gives_back_the_older_schema_and_its_rows(db_url: str) -> None:
    """Step by step from head to base: each schema equals its upgrade's, every row it holds stays."""
    order = revisions()
    engine = create_engine(db_url)
    try:
        expected: dict[str, Schema] = {"base": await schema_of(engine)}
        for revision in order:
            await migrate.upgrade(engine, revision)
            expected[revision] = await schema_of(engine)
        await fill(engine)
        at_head = await rows_of(engine, expected[order[-1]])
        assert all(at_head.values()), "every table has a row to keep"
        for newer, older in zip(order[::-1], ["base", *order][-2::-1], strict=True):
            await migrate.downgrade(engine, older)
            assert await migrate.current_revision(engine) == (None if older == "base" else older)
            assert await schema_of(engine) == expected[older], f"{newer} -> {older}"
            rows = await rows_of(engine, expected[older])
            assert rows == held_by(at_head, expected[older]), f"{newer} -> {older}"
        await migrate.upgrade(engine)
        assert await schema_of(engine) == expected[order[-1]]
    finally:
        await engine.dispose()


async def test_down_to_the_first_revision_and_up_again_keeps_the_rows(db_url: str) -> None:
    """A round trip to the first revision keeps what it holds, and SQLite enforces foreign keys after."""
    order = revisions()
    engine = create_engine(db_url)
    try:
        await migrate.upgrade(engine, order[0])
        first = await schema_of(engine)
        await migrate.upgrade(engine)
        await fill(engine)
        at_head = await rows_of(engine, first)
        await migrate.downgrade(engine, order[0])
        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == migrate.HEAD_REVISION
        assert held_by(await rows_of(engine, first), first) == held_by(at_head, first)
        if engine.dialect.name == "sqlite":
            assert await foreign_keys_enforced(engine)
    finally:
        await engine.dispose()


async def test_a_downgrade_under_the_crms_references_is_refused_whole(db_url: str) -> None:
    """Dropping leads a CRM row references fails and changes nothing; older broken rows do not block."""
    engine = create_engine(db_url)
    try:
        await migrate.upgrade(engine)
        await fill(engine)
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "CREATE TABLE crm_notes (id INTEGER PRIMARY KEY, "
                "lead_id BIGINT REFERENCES leads (id), account_id BIGINT REFERENCES accounts (id))"
            )
            await conn.exec_driver_sql("INSERT INTO crm_notes VALUES (1, 1, 1)")
        if engine.dialect.name == "sqlite":  # a CRM that wrote with foreign keys off
            with closing(sqlite3.connect(str(engine.url.database))) as crm:
                crm.execute("INSERT INTO crm_notes VALUES (2, NULL, 99)")
                crm.commit()
        before = await schema_of(engine)
        with pytest.raises((DatabaseError, sa.exc.DBAPIError), match=r"crm_notes|depend"):
            await migrate.downgrade(engine, "0003")
        assert await migrate.current_revision(engine) == migrate.HEAD_REVISION
        assert {t: s for t, s in (await schema_of(engine)).items() if t in before} == before
        await migrate.downgrade(engine, "0007")  # nothing of the CRM's points at what 0008 drops
        assert await migrate.current_revision(engine) == "0007"
    finally:
        await engine.dispose()
