"""What the CLI calls to print: read the letters asked for, all of them or none."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.printout import PrintLetter
from maild.db.printout import letters_to_print
from maild.errors import PrintError


def unique_ids(ids: Sequence[int]) -> list[int]:
    """Keep the order given, printing a letter named twice only once."""
    return list(dict.fromkeys(ids))


async def load_letters(
    sessions: async_sessionmaker[AsyncSession], ids: Sequence[int]
) -> list[PrintLetter]:
    """Read the letters in the order given; raise PrintError naming every id that does not exist."""
    wanted = unique_ids(ids)
    if not wanted:
        raise PrintError("no letter ids given")
    async with sessions() as session:
        found = await letters_to_print(session, wanted)
    missing = [letter_id for letter_id in wanted if letter_id not in found]
    if missing:
        listed = ", ".join(str(letter_id) for letter_id in missing)
        noun = "this letter does" if len(missing) == 1 else "these letters do"
        raise PrintError(f"{noun} not exist: {listed}; nothing was written")
    return [found[letter_id] for letter_id in wanted]
