"""`maild leads disable-potential-clients` and `enable-potential-clients` on a database made by `maild db upgrade`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from maild.db.engine import create_engine, session_factory
from maild.db.flags import use_potential_clients
from maild.db.tables import Client, PotentialClient
from maild.settings import load_config
from maild.testing.parties import seed
from tests.dryrun_config import invoke, upgraded_config, write_config

pytestmark = pytest.mark.usefixtures("db_url")


async def _seed(path: Path, count: int) -> None:
    engine = create_engine(load_config(path, check_secrets=False).database_url())
    try:
        async with session_factory(engine).begin() as session:
            await seed(session, count)
    finally:
        await engine.dispose()


async def _state(path: Path) -> tuple[int, int, bool]:
    """Give the unlinked potential clients, the clients, and the flag."""
    engine = create_engine(load_config(path, check_secrets=False).database_url())
    try:
        async with session_factory(engine)() as session:
            unlinked = await session.execute(
                select(func.count()).where(PotentialClient.client_id.is_(None))
            )
            clients = await session.execute(select(func.count(Client.id)))
            flag = await use_potential_clients(session)
            return int(unlinked.scalar_one()), int(clients.scalar_one()), flag
    finally:
        await engine.dispose()


@pytest.fixture
def config(db_url: str, tmp_path: Path) -> Path:
    """Write a config, create the schema with `maild db upgrade`, seed 20 potential clients."""
    path = upgraded_config(tmp_path, db_url)
    asyncio.run(_seed(path, 20))
    return path


def test_declining_changes_nothing(config: Path) -> None:
    """Answering no, or giving no answer at all, cancels with exit 1 and changes nothing."""
    before = asyncio.run(_state(config))
    assert before == (20, 4, True)
    for stdin in ("n\n", None):
        result = invoke("leads", "disable-potential-clients", "-c", str(config), stdin=stdin)
        assert result.exit_code == 1, result.output
        assert "20 to convert" in result.output
        assert "cancelled, nothing changed" in result.output
        assert asyncio.run(_state(config)) == before


def test_yes_converts_and_enable_switches_back_on(config: Path) -> None:
    """With --yes every potential client is converted, the summary gives the figures and the
    matches, the setting is off; enable-potential-clients turns it back on."""
    result = invoke("leads", "disable-potential-clients", "-c", str(config), "--yes")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "converted 20 potential clients: 14 clients and 12 contact persons created" in out
    assert "6 matched to existing clients" in out
    assert "documents updated: 60 (40 letters, 20 leads)" in out
    assert "same address known8@clients.example" in out
    assert "use_potential_clients is now off" in out
    assert asyncio.run(_state(config)) == (0, 18, False)

    again = invoke("leads", "disable-potential-clients", "-c", str(config), stdin="y\n")
    assert again.exit_code == 0, again.output
    assert "Nothing to convert" in again.output
    assert "converted 0 potential clients" in again.output

    on = invoke("leads", "enable-potential-clients", "-c", str(config))
    assert on.exit_code == 0, on.output
    assert "use_potential_clients is now on" in on.output
    assert asyncio.run(_state(config))[2] is True


def test_missing_database_is_not_created(tmp_path: Path) -> None:
    """A SQLite file that does not exist is reported, not created."""
    path = write_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'absent.db'}")
    result = invoke("leads", "enable-potential-clients", "-c", str(path))
    assert result.exit_code == 1
    assert "does not exist" in result.output
    assert not (tmp_path / "absent.db").exists()
