"""The lookups made for every stored group find letters by an index, not by reading the table.

A lookup that reads the whole ``letters`` table costs more with every letter stored: on a
10,000-letter mailbox one such query took more time than storing the letters did. SQLite has
no statistics here (maild never runs ANALYZE), so its plan follows the query's shape alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from maild.db import migrate, outbox, repo, sending
from maild.db.engine import create_engine, session_factory
from maild.db.repo import FolderRow

SHA = ["a" * 64, "b" * 64, "c" * 64]


async def test_per_group_lookups_use_an_index_on_sqlite(sqlite_url: str) -> None:
    """Moved-here, sent-here and re-keying lookups search an index of ``letters``."""
    engine = create_engine(sqlite_url)
    await migrate.upgrade(engine)
    seen: list[tuple[str, Any]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def note(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM letters" in statement:
            seen.append((statement, params))

    folder = FolderRow(
        id=1, account_id=1, uidvalidity=7, last_uid=0, first_sync_done=True, uidvalidity_changes=0
    )
    try:
        async with session_factory(engine)() as session:
            await outbox.moved_here(session, account_id=1, folder="Invoices", sha256s=SHA)
            await sending.unfiled_sent(session, 1, SHA)
            await repo.rekey_letter(session, folder, sha256=SHA[0], uidvalidity=8, uid=5)
        event.remove(engine.sync_engine, "before_cursor_execute", note)
        assert len(seen) == 3
        async with engine.connect() as conn:
            for statement, params in seen:
                plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
                steps = [row[3] for row in plan]
                assert not any(step.startswith("SCAN letters") for step in steps), steps
                assert any("letters USING" in step for step in steps), steps
    finally:
        await engine.dispose()
