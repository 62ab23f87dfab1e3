"""CRM users and their personal sender names: mirrored from the config, matched on incoming letters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.names import name_key
from maild.db.repo import dialect_insert
from maild.db.tables import User, UserSenderName, utcnow


@dataclass(frozen=True, slots=True)
class DeclaredUser:
    """A user as the config declares it: login, name, email, font, sender name per account."""

    login: str
    full_name: str
    email: str
    font: str
    sender_names: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class NameOwner:
    """A user whose personal sender name on an account matches, and whether it is their current one."""

    login: str
    current: bool


async def upsert_users(
    session: AsyncSession, users: Sequence[DeclaredUser], account_ids: Mapping[str, int]
) -> None:
    """Create or update the config's users and make each declared sender name their current one."""
    for user in users:
        stmt = dialect_insert(session, User).values(
            login=user.login,
            full_name=user.full_name,
            email=user.email,
            font=user.font,
            active=True,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["login"],
            set_={
                "full_name": user.full_name,
                "email": user.email,
                "font": user.font,
                "updated_at": utcnow(),
            },
        ).returning(User.id)
        user_id = int((await session.execute(stmt)).scalar_one())
        for account, name in user.sender_names.items():
            await record_sender_name(session, user_id, account_ids[account], name, current=True)


async def record_sender_name(
    session: AsyncSession, user_id: int, account_id: int, name: str, *, current: bool
) -> None:
    """Remember a sender name of a user on an account; a current one retires the user's others."""
    key = name_key(name)
    if not key:
        return
    if current:
        await session.execute(
            update(UserSenderName)
            .where(
                UserSenderName.user_id == user_id,
                UserSenderName.account_id == account_id,
                UserSenderName.name_key != key,
            )
            .values(current=False)
        )
    stmt = dialect_insert(session, UserSenderName).values(
        user_id=user_id,
        account_id=account_id,
        name=name[:500],
        name_key=key[:500],
        current=current,
        created_at=utcnow(),
    )
    changes: dict[str, object] = {"name": name[:500]}
    if current:
        changes["current"] = True
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["user_id", "account_id", "name_key"], set_=changes
        )
    )


async def owners_of_name(session: AsyncSession, account_id: int, name: str) -> list[NameOwner]:
    """Find the active users who have sent from an account with this display name."""
    rows = await session.execute(
        select(User.login, UserSenderName.current)
        .join(User, User.id == UserSenderName.user_id)
        .where(
            UserSenderName.account_id == account_id,
            UserSenderName.name_key == name_key(name)[:500],
            User.active.is_(True),
        )
        .order_by(User.login)
    )
    return [NameOwner(login, bool(current)) for login, current in rows]
