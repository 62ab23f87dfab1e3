"""Rule-driven mailbox effects performed a group per IMAP command: real Dovecot, both databases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.db import outbox as outbox_db
from maild.db.engine import create_engine, session_factory
from maild.db.tables import Letter, OutboxItem
from maild.errors import ImapCommandError
from maild.ingest.imap import ImapEndpoint, ImapSession, connect
from maild.outbox.dispatcher import Dispatcher
from maild.runtime import Daemon
from maild.settings import Config
from maild.testing.dovecot import DovecotServer
from maild.testing.samples import SALES, letter
from tests.e2e.helpers import make_config, unique_folder

Tweak = Callable[[ImapSession], Awaitable[None]]


class _Watched(Daemon):
    """A daemon whose dispatcher's IMAP sessions are adjusted and their writes counted."""

    def __init__(self, config: Config, tweak: Tweak | None = None) -> None:
        super().__init__(config)
        self.moves: list[list[int]] = []
        self._tweak = tweak

    def _dispatcher(self, sessions: async_sessionmaker[AsyncSession]) -> Dispatcher:
        dispatcher = super()._dispatcher(sessions)
        dispatcher._connect_imap = self._connect
        return dispatcher

    async def _connect(self, endpoint: ImapEndpoint) -> ImapSession:
        session = await connect(endpoint)
        real_move = session.move

        async def move(uids: Sequence[int], target: str) -> dict[int, int]:
            self.moves.append(sorted(uids))
            return await real_move(uids, target)

        session.move = move  # type: ignore[method-assign]
        if self._tweak is not None:
            await self._tweak(session)
        return session


def _letters(matching: int, others: int) -> list[bytes]:
    """Letters from ivan@ (the rule's) first, then from other senders."""
    picked = [
        letter(sender=("Ivan", "ivan@client.example"), to=SALES, subject=f"order {n}", body="hi")
        for n in range(matching)
    ]
    rest = [
        letter(sender=("Ann", "ann@client.example"), to=SALES, subject=f"hello {n}", body="hi")
        for n in range(others)
    ]
    return picked + rest


def _config(
    dovecot: DovecotServer,
    tmp_path: Path,
    db_url: str,
    inbox: str,
    actions: list[dict[str, Any]],
    **extra: Any,
) -> Config:
    rule = {"name": "ivan", "match": {"address": "from", "matches": "^ivan@"}, "actions": actions}
    return make_config(
        dovecot,
        tmp_path,
        db_url,
        {"sales": [inbox]},
        rules=[rule],
        first_sync="process",
        **extra,
    )


async def _outbox(db_url: str) -> list[OutboxItem]:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            rows = await session.execute(select(OutboxItem).order_by(OutboxItem.id))
            return list(rows.scalars())
    finally:
        await engine.dispose()


async def _letter_rows(db_url: str) -> list[Letter]:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            return list((await session.execute(select(Letter))).scalars())
    finally:
        await engine.dispose()


async def test_many_letters_move_in_one_command(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """Twenty matches get their flag and then move with one UID MOVE, each row recorded done."""
    inbox, target = unique_folder("In"), unique_folder("Orders")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", target)
    dovecot.append_many("sales", inbox, _letters(20, 10))
    daemon = _Watched(
        _config(dovecot, tmp_path, db_url, inbox, [{"add_flag": "$Order"}, {"move": target}])
    )
    result = await daemon.run(once=True)
    assert result.ok and result.outbox is not None
    assert result.outbox.done == 40 and result.outbox.dead == 0
    assert daemon.moves == [list(range(1, 21))]
    moved = dovecot.uids("sales", target)
    assert len(moved) == 20 and len(dovecot.uids("sales", inbox)) == 10
    assert all("$Order" in dovecot.flags("sales", target, uid) for uid in moved)
    rows = await _outbox(db_url)
    assert {row.status for row in rows} == {"done"}
    moves = [row for row in rows if row.kind == "move"]
    assert sorted(row.result["uid"] for row in moves) == moved  # COPYUID read per letter
    assert all(row.attempts == 1 for row in rows)


async def test_a_vanished_letter_does_not_hold_up_its_group(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """A letter gone from the folder before its move is recorded missing; the rest still move."""
    inbox, target = unique_folder("In"), unique_folder("Orders")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", target)
    dovecot.append_many("sales", inbox, _letters(5, 3))

    async def vanish(session: ImapSession) -> None:
        with dovecot.imap("sales") as conn:  # another client deletes UID 2 meanwhile
            conn.select(f'"{inbox}"')
            conn.uid("STORE", "2", "+FLAGS.SILENT", "(\\Deleted)")
            conn.expunge()

    daemon = _Watched(_config(dovecot, tmp_path, db_url, inbox, [{"move": target}]), vanish)
    result = await daemon.run(once=True)
    assert result.ok and result.outbox is not None
    assert result.outbox.done == 5 and result.outbox.dead == 0
    assert daemon.moves == [[1, 3, 4, 5]]
    assert len(dovecot.uids("sales", target)) == 4
    assert len(dovecot.uids("sales", inbox)) == 3
    rows = await _outbox(db_url)
    assert {row.status for row in rows} == {"done"}
    assert sum(bool(row.result.get("missing")) for row in rows) == 1


async def test_a_refused_group_goes_one_by_one(dovecot: DovecotServer, tmp_path: Path) -> None:
    """When the server refuses the whole set, each letter is moved on its own and none is lost."""
    inbox, target = unique_folder("In"), unique_folder("Orders")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", target)
    dovecot.append_many("sales", inbox, _letters(4, 1))

    refused: list[list[int]] = []

    async def refuse_sets(session: ImapSession) -> None:
        real_move = session.move

        async def move(uids: Sequence[int], folder: str) -> dict[int, int]:
            if len(uids) > 1:
                refused.append(sorted(uids))
                raise ImapCommandError("UID MOVE: NO [SERVERBUG] refused")
            return await real_move(uids, folder)

        session.move = move  # type: ignore[method-assign]

    db_url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    daemon = _Watched(_config(dovecot, tmp_path, db_url, inbox, [{"move": target}]), refuse_sets)
    result = await daemon.run(once=True)
    assert result.ok and result.outbox is not None
    assert result.outbox.done == 4 and result.outbox.dead == 0
    assert refused == [[1, 2, 3, 4]]
    assert daemon.moves == [[1], [2], [3], [4]]
    assert len(dovecot.uids("sales", target)) == 4
    assert len(dovecot.uids("sales", inbox)) == 1


async def test_without_move_a_group_is_copied_and_expunged(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """On a server without MOVE a group into Deleted is COPY, \\Deleted, UID EXPUNGE of its UIDs."""
    inbox, trash = unique_folder("In"), unique_folder("Trash")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", trash)
    dovecot.append_many("sales", inbox, _letters(6, 2))

    async def no_move(session: ImapSession) -> None:
        session.capabilities = session.capabilities - {"MOVE"}

    config = _config(dovecot, tmp_path, db_url, inbox, [{"move": trash}], deleted=trash)
    daemon = _Watched(config, no_move)
    result = await daemon.run(once=True)
    assert result.ok and result.outbox is not None
    assert result.outbox.done == 6 and result.outbox.dead == 0
    assert daemon.moves == [list(range(1, 7))]
    kept = dovecot.uids("sales", inbox)
    assert kept == [7, 8]  # expunged exactly the moved ones
    assert all("\\Deleted" not in dovecot.flags("sales", inbox, uid) for uid in kept)
    binned = dovecot.uids("sales", trash)
    assert len(binned) == 6
    assert all("\\Deleted" in dovecot.flags("sales", trash, uid) for uid in binned)
    marked = [row for row in await _letter_rows(db_url) if row.marked_for_deletion]
    assert len(marked) == 6


async def test_a_crash_before_the_record_repeats_the_group_harmlessly(
    dovecot: DovecotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moved but not recorded (a crash): after the lease the rows find their letters gone, done."""
    inbox, target = unique_folder("In"), unique_folder("Orders")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", target)
    dovecot.append_many("sales", inbox, _letters(5, 2))
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    config = _config(dovecot, tmp_path, db_url, inbox, [{"move": target}])

    async def crash(*args: Any) -> None:
        raise RuntimeError("maild died before recording the group")

    with monkeypatch.context() as patch:
        patch.setattr(outbox_db, "mark_done_many", crash)
        with pytest.raises(RuntimeError, match="died"):
            await Daemon(config).run(once=True)
    assert len(dovecot.uids("sales", target)) == 5  # performed, not recorded
    engine = create_engine(db_url)
    try:
        async with session_factory(engine).begin() as session:  # the lease runs out
            await session.execute(update(OutboxItem).values(locked_until=None))
    finally:
        await engine.dispose()
    result = await Daemon(config).run(once=True)
    assert result.ok and result.outbox is not None and result.outbox.done == 5
    assert len(dovecot.uids("sales", target)) == 5 and len(dovecot.uids("sales", inbox)) == 2
    rows = await _outbox(db_url)
    assert [row.status for row in rows] == ["done"] * 5
    assert all(row.result == {"folder": target, "missing": True} for row in rows)
