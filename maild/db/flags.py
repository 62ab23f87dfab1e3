"""The ``settings`` flags maild shares with the CRM, read and written in the caller's transaction."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from maild.db.repo import dialect_insert
from maild.db.tables import USE_POTENTIAL_CLIENTS, Setting, utcnow

_TRUE = {"true", "on", "yes", "1"}
_DEFAULTS = {USE_POTENTIAL_CLIENTS: True}


async def get_flag(session: AsyncSession, key: str) -> bool:
    """Read a boolean flag; an absent row means the flag's default."""
    value = (await session.execute(select(Setting.value).where(Setting.key == key))).scalar()
    if value is None:
        return _DEFAULTS.get(key, False)
    return value.strip().lower() in _TRUE


async def set_flag(session: AsyncSession, key: str, value: bool) -> None:
    """Write a boolean flag as ``true``/``false``, creating the row on first use."""
    text = "true" if value else "false"
    stmt = dialect_insert(session, Setting).values(key=key, value=text, updated_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"], set_={"value": text, "updated_at": utcnow()}
    )
    await session.execute(stmt)


async def use_potential_clients(session: AsyncSession) -> bool:
    """Tell whether unknown senders become potential clients (on) or clients directly (off)."""
    return await get_flag(session, USE_POTENTIAL_CLIENTS)
