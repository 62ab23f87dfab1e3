"""Two daemons on one database share the folders by leases, on SQLite as on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from maild.db.engine import create_engine, session_factory
from maild.db.tables import Folder
from maild.runtime import Daemon
from maild.testing.dovecot import DovecotServer
from tests.e2e.helpers import letter_rows, make_config, numbered, unique_folder, wait_until

FOLDERS = 4


def here(daemon: Daemon) -> int:
    """Give how many folders a daemon's /healthz says it polls."""
    leases = daemon.status.as_dict().get("leases")
    return int(leases["here"]) if isinstance(leases, dict) else 0


async def holders(db_url: str, names: list[str]) -> list[str | None]:
    """Read who holds each of the test's folders."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            found = await session.scalars(select(Folder.lease_owner).where(Folder.name.in_(names)))
            return list(found)
    finally:
        await engine.dispose()


async def test_two_daemons_split_the_folders_and_hand_them_over(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """Each daemon polls half the folders, every letter is stored once; a stop hands over at once."""
    names = [unique_folder("L") for _ in range(FOLDERS)]
    for name in names:
        dovecot.create_folder("sales", name)
        dovecot.append_many("sales", name, numbered(3, name))
    config = make_config(dovecot, tmp_path, db_url, {"sales": names}, lease_seconds=1)
    first, second = Daemon(config), Daemon(config)
    runs = [asyncio.create_task(d.run()) for d in (first, second)]
    try:

        async def split() -> bool:
            if here(first) + here(second) < FOLDERS:
                return False  # starting: the two migrate the fresh database one after the other
            rows = await letter_rows(db_url)
            return len(rows) == 3 * FOLDERS and here(first) == here(second) == FOLDERS // 2

        await wait_until(split, timeout=60, what="the folders to be split and read")
        rows = await letter_rows(db_url)
        assert len({(r[0], r[2]) for r in rows}) == len(rows)  # one row per (folder, uid)
        owners = await holders(db_url, names)
        assert len(set(owners)) == 2 and None not in owners

        first.stop.set()
        assert (await runs[0]).ok
        await wait_until(lambda: _all_here(second), timeout=30, what="the handover")
        dovecot.append_many("sales", names[0], numbered(1, "after"))
        await wait_until(
            lambda: _count_is(db_url, 3 * FOLDERS + 1), timeout=30, what="the letter after"
        )
    finally:
        for daemon in (first, second):
            daemon.stop.set()
        await asyncio.gather(*runs, return_exceptions=True)
    assert await holders(db_url, names) == [None] * FOLDERS


async def _all_here(daemon: Daemon) -> bool:
    """Tell whether a daemon polls every folder."""
    return here(daemon) == FOLDERS


async def _count_is(db_url: str, n: int) -> bool:
    """Tell whether exactly n letters are stored."""
    return len(await letter_rows(db_url)) == n
