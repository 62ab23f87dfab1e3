"""The write side of maild.ingest.imap (move, copy, flags, folders, APPEND, search) on real Dovecot."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from maild.errors import ImapCommandError, ImapConnectionError
from maild.ingest.imap import ImapSession, connect
from maild.testing import DovecotServer
from tests.integration.test_imap import (
    NO_HANG,
    USER,
    command,
    endpoint,
    letter,
    scripted_endpoint,
    scripted_server,
    session_for,
)


def unique(prefix: str = "w") -> str:
    """Give a folder name no other test of the session Dovecot uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def source(dovecot: DovecotServer) -> str:
    """Create the folder letters are moved or copied out of."""
    name = unique("src")
    dovecot.create_folder(USER, name)
    return name


@pytest.fixture
def target(dovecot: DovecotServer) -> str:
    """Create the folder letters are moved or copied into."""
    name = unique("dst")
    dovecot.create_folder(USER, name)
    return name


@pytest.fixture(params=["MOVE", "COPY+EXPUNGE"])
def move_mode(request: pytest.FixtureRequest) -> str:
    """Run a move test with UID MOVE and again with the COPY fallback."""
    mode: str = request.param
    return mode


def use_mode(session: ImapSession, mode: str) -> None:
    """Hide MOVE from the session for the fallback, as a server without RFC 6851 would."""
    if mode != "MOVE":
        session.capabilities = session.capabilities - {"MOVE"}
    assert session.has_move is (mode == "MOVE")


def flags_of(dovecot: DovecotServer, folder: str, uid: int) -> set[str]:
    """Read one letter's flags with plain imaplib, as a set."""
    return set(dovecot.flags(USER, folder, uid))


# ---------------------------------------------------------------------------------------------
# move and copy
# ---------------------------------------------------------------------------------------------


async def test_dovecot_offers_move_and_uidplus(dovecot: DovecotServer) -> None:
    """The capabilities read at login tell callers that MOVE and UIDPLUS are there."""
    async with session_for(endpoint(dovecot)) as session:
        assert session.has_move
        assert session.has_uidplus
        assert {"MOVE", "UIDPLUS"} <= session.capabilities


async def test_move_maps_uids_and_keeps_flags(
    dovecot: DovecotServer, source: str, target: str, move_mode: str
) -> None:
    """Moved letters leave the folder, arrive with their flags, and COPYUID maps old to new."""
    first, second, third = dovecot.append_many(USER, source, [letter(n) for n in range(3)])
    dovecot.append(USER, target, letter(99))  # so the new UIDs differ from the old ones
    dovecot.append(USER, source, letter(3), flags=["\\Seen", "kw1"])
    fourth = third + 1
    async with session_for(endpoint(dovecot)) as session:
        use_mode(session, move_mode)
        await session.select(source)
        mapping = await session.move([first, fourth], target)
        assert sorted(mapping) == [first, fourth]
        assert await session.uids_after(0) == [second, third]
    assert dovecot.uids(USER, source) == [second, third]
    assert dovecot.uids(USER, target) == [1, *sorted(mapping.values())]
    assert {"\\Seen", "kw1"} <= flags_of(dovecot, target, mapping[fourth])
    assert "\\Seen" not in flags_of(dovecot, target, mapping[first])
    assert "\\Deleted" not in flags_of(dovecot, target, mapping[first])


async def test_fallback_expunges_only_the_moved_letters(
    dovecot: DovecotServer, source: str, target: str
) -> None:
    """Without MOVE, UID EXPUNGE removes just the moved letters, not others marked \\Deleted."""
    moved = dovecot.append(USER, source, letter(1))
    marked = dovecot.append(USER, source, letter(2), flags=["\\Deleted"])
    async with session_for(endpoint(dovecot)) as session:
        use_mode(session, "COPY+EXPUNGE")
        await session.select(source)
        mapping = await session.move([moved], target)
    assert list(mapping) == [moved]
    assert dovecot.uids(USER, source) == [marked]
    assert "\\Deleted" in flags_of(dovecot, source, marked)


async def test_without_uidplus_the_originals_stay_marked(
    dovecot: DovecotServer, source: str, target: str
) -> None:
    """Without MOVE and UIDPLUS nothing is expunged: the originals are left with \\Deleted."""
    uid = dovecot.append(USER, source, letter(1))
    async with session_for(endpoint(dovecot)) as session:
        session.capabilities = session.capabilities - {"MOVE", "UIDPLUS"}
        await session.select(source)
        mapping = await session.move([uid], target)
    assert dovecot.uids(USER, source) == [uid]
    assert "\\Deleted" in flags_of(dovecot, source, uid)
    assert dovecot.uids(USER, target) == [mapping[uid]]
    assert "\\Deleted" not in flags_of(dovecot, target, mapping[uid])


async def test_deleted_travels_with_the_moved_letter(
    dovecot: DovecotServer, source: str, target: str, move_mode: str
) -> None:
    """A letter marked \\Deleted before the move keeps the mark in the target folder."""
    uid = dovecot.append(USER, source, letter(1))
    async with session_for(endpoint(dovecot)) as session:
        use_mode(session, move_mode)
        await session.select(source)
        await session.add_flags([uid], ["\\Deleted"])
        mapping = await session.move([uid], target)
    assert dovecot.uids(USER, source) == []
    assert "\\Deleted" in flags_of(dovecot, target, mapping[uid])


async def test_copy_keeps_the_original(dovecot: DovecotServer, source: str, target: str) -> None:
    """COPY leaves the letter where it was and gives the copy's UID with the flags copied."""
    uid = dovecot.append(USER, source, letter(1), flags=["\\Flagged"])
    async with session_for(endpoint(dovecot)) as session:
        await session.select(source)
        mapping = await session.copy([uid], target)
        assert await session.copy([], target) == {}
    assert dovecot.uids(USER, source) == [uid]
    assert dovecot.uids(USER, target) == [mapping[uid]]
    assert "\\Flagged" in flags_of(dovecot, target, mapping[uid])


async def test_many_uids_are_moved_in_chunks(
    dovecot: DovecotServer, source: str, target: str, move_mode: str
) -> None:
    """More letters than one command takes are moved chunk by chunk, every one mapped."""
    uids = dovecot.append_many(USER, source, [letter(n) for n in range(1200)])
    async with session_for(endpoint(dovecot, timeout=30)) as session:
        use_mode(session, move_mode)
        await session.select(source)
        mapping = await session.move(uids[::2] + uids[1::2], target)
    assert sorted(mapping) == uids
    assert sorted(mapping.values()) == dovecot.uids(USER, target)
    assert dovecot.uids(USER, source) == []


async def test_move_to_a_missing_folder_says_trycreate(
    dovecot: DovecotServer, source: str, move_mode: str
) -> None:
    """A missing target gives ImapCommandError.trycreate; creating it and retrying works."""
    uid = dovecot.append(USER, source, letter(1))
    missing = unique("missing")
    async with session_for(endpoint(dovecot)) as session:
        use_mode(session, move_mode)
        await session.select(source)
        with pytest.raises(ImapCommandError) as caught:
            await session.move([uid], missing)
        assert caught.value.trycreate
        assert caught.value.code == "TRYCREATE"
        assert not session.broken
        assert not await session.folder_exists(missing)
        await session.create_folder(missing)
        mapping = await session.move([uid], missing)
        assert await session.uids_after(0) == []
    assert dovecot.uids(USER, missing) == [mapping[uid]]


async def test_other_refusals_are_not_trycreate(dovecot: DovecotServer, source: str) -> None:
    """A NO without TRYCREATE (SELECT of a missing folder) does not claim the folder is missing."""
    async with session_for(endpoint(dovecot)) as session:
        with pytest.raises(ImapCommandError) as caught:
            await session.select(unique("nope"))
        assert not caught.value.trycreate


async def test_writes_need_a_selected_folder(dovecot: DovecotServer, target: str) -> None:
    """Move, copy, flags and search refuse to run before a SELECT."""
    async with session_for(endpoint(dovecot)) as session:
        for attempt in (
            session.move([1], target),
            session.copy([1], target),
            session.add_flags([1], ["\\Seen"]),
            session.remove_flags([1], ["\\Seen"]),
            session.search_message_id("<a@b>"),
        ):
            with pytest.raises(ImapCommandError, match="no folder selected"):
                await attempt


# ---------------------------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------------------------


async def test_add_and_remove_flags(dovecot: DovecotServer, source: str) -> None:
    """System flags and keywords are set and cleared on exactly the letters named."""
    first, second = dovecot.append_many(USER, source, [letter(1), letter(2)])
    wanted = ["\\Seen", "\\Flagged", "maild-done", "$Label1"]
    async with session_for(endpoint(dovecot)) as session:
        await session.select(source)
        await session.add_flags([first], wanted)
        assert set(wanted) <= flags_of(dovecot, source, first)
        assert flags_of(dovecot, source, second) == set()
        await session.remove_flags([first], ["\\seen", "maild-done"])  # any case for system
        assert flags_of(dovecot, source, first) == {"\\Flagged", "$Label1"}
        await session.add_flags([first, second], [])  # nothing to do
        await session.remove_flags([first, second], ["\\Flagged", "$Label1"])
    assert flags_of(dovecot, source, first) == set()


@pytest.mark.parametrize(
    "bad",
    [
        "two words",
        "a)b",
        "(x",
        'q"uote',
        "back\\slash",
        "100%",
        "star*",
        "br]acket",
        "{5}",
        "tab\there",
        "line\r\nA1 DELETE INBOX",
        "nul\x00",
        "ключ",
        "",
        "k" * 101,
        "\\Recent",
        "\\Foo",
    ],
)
async def test_unsafe_flags_are_refused(dovecot: DovecotServer, source: str, bad: str) -> None:
    """A flag that could break the command is refused before anything is sent."""
    uid = dovecot.append(USER, source, letter(1))
    async with session_for(endpoint(dovecot)) as session:
        await session.select(source)
        with pytest.raises(ValueError):
            await session.add_flags([uid], ["\\Seen", bad])
        with pytest.raises(ValueError):
            await session.remove_flags([uid], [bad])
        with pytest.raises(ValueError):
            await session.append(source, letter(2), flags=[bad])
        assert not session.broken
    assert dovecot.uids(USER, source) == [uid]
    assert flags_of(dovecot, source, uid) == set()


async def test_one_string_is_not_taken_for_a_flag_list(dovecot: DovecotServer, source: str) -> None:
    """Passing "\\Seen" instead of ["\\Seen"] is an error, not one flag per character."""
    uid = dovecot.append(USER, source, letter(1))
    async with session_for(endpoint(dovecot)) as session:
        await session.select(source)
        with pytest.raises(ValueError, match="sequence"):
            await session.add_flags([uid], "\\Seen")


# ---------------------------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------------------------


async def test_create_folder_twice(dovecot: DovecotServer) -> None:
    """Creating a folder that exists succeeds, so callers need not check first."""
    name = unique("new")
    async with session_for(endpoint(dovecot)) as session:
        assert not await session.folder_exists(name)
        await session.create_folder(name)
        await session.create_folder(name)
        assert await session.folder_exists(name)
        assert await session.folder_exists("INBOX")
        assert await session.folder_exists("inbox")
        assert not await session.folder_exists(name[:-1] + "%")  # a wildcard is no match
    assert dovecot.uids(USER, name) == []


async def test_non_ascii_folder_names(dovecot: DovecotServer, source: str) -> None:
    """Folder names like "Счета" go out as modified UTF-7 and Dovecot lists them in UTF-8."""
    name = f"Счета & Co {uuid.uuid4().hex[:6]}"
    nested = f"Архив/{name}"
    uid = dovecot.append(USER, source, letter(1))
    async with session_for(endpoint(dovecot)) as session:
        await session.create_folder(name)
        await session.create_folder(nested)
        assert await session.folder_exists(name)
        assert await session.folder_exists(nested)
        await session.select(source)
        copied = await session.copy([uid], name)
        moved = await session.move([uid], nested)
        appended = await session.append(name, letter(2))
    listed = dovecot.doveadm("mailbox", "list", "-u", USER).splitlines()
    assert name in listed
    assert nested in listed
    assert dovecot.uids(USER, name) == [copied[uid], appended]
    assert dovecot.uids(USER, nested) == [moved[uid]]


# ---------------------------------------------------------------------------------------------
# APPEND and search
# ---------------------------------------------------------------------------------------------


async def test_append_gives_the_uid_and_keeps_flags_and_date(
    dovecot: DovecotServer, target: str
) -> None:
    """APPEND stores the bytes as given, with the flags and date, and APPENDUID names the UID."""
    when = datetime(2024, 3, 5, 7, 8, 9, tzinfo=timezone(timedelta(hours=3)))
    raw = letter(5, body_size=200_000)
    async with session_for(endpoint(dovecot)) as session:
        uid = await session.append(target, raw, flags=["\\Seen", "maild-sent"], when=when)
        assert uid is not None
        plain = await session.append(target, letter(6))
        assert plain == uid + 1
        await session.select(target)
        first, second = await session.fetch([uid, plain])
    assert dovecot.uids(USER, target) == [uid, plain]
    assert first.raw == raw
    assert first.internaldate == when
    assert set(first.flags) - {"\\Recent"} == {"\\Seen", "maild-sent"}
    assert set(second.flags) - {"\\Recent"} == set()


async def test_a_big_letter_is_appended_in_pieces_byte_for_byte(
    dovecot: DovecotServer, target: str
) -> None:
    """A letter many times one write goes to the server a piece at a time as the socket takes
    it; it is stored whole, and the session stays in step for the next command."""
    raw = letter(7, body_size=6_000_000)
    async with session_for(endpoint(dovecot)) as session:
        uid = await session.append(target, raw)
        after = await session.append(target, letter(8))
        await session.select(target)
        [stored] = await session.fetch([uid])
    assert after == uid + 1
    assert stored.raw == raw


async def test_append_to_a_missing_folder_says_trycreate(dovecot: DovecotServer) -> None:
    """APPEND into a folder that is not there gives the TRYCREATE error, like move and copy."""
    missing = unique("sent")
    async with session_for(endpoint(dovecot)) as session:
        with pytest.raises(ImapCommandError) as caught:
            await session.append(missing, letter(1))
        assert caught.value.trycreate
        await session.create_folder(missing)
        uid = await session.append(missing, letter(1))
    assert dovecot.uids(USER, missing) == [uid]


async def test_append_refuses_a_naive_date(dovecot: DovecotServer, target: str) -> None:
    """A date without a timezone would be ambiguous on the server, so it is refused."""
    async with session_for(endpoint(dovecot)) as session:
        with pytest.raises(ValueError, match="timezone"):
            await session.append(target, letter(1), when=datetime(2024, 1, 1))


async def test_search_message_id(dovecot: DovecotServer, source: str) -> None:
    """HEADER search finds a letter by its exact Message-ID, with or without angle brackets."""
    uids = dovecot.append_many(USER, source, [letter(n) for n in (1, 11, 21)])
    odd = b'From: a@example.com\r\nMessage-ID: <we"ird\\id@example.com>\r\n\r\nx\r\n'
    odd_uid = dovecot.append(USER, source, odd)
    async with session_for(endpoint(dovecot)) as session:
        await session.select(source)
        assert await session.search_message_id("<m1@example.com>") == [uids[0]]
        assert await session.search_message_id("m11@example.com") == [uids[1]]
        assert await session.search_message_id("<nobody@example.com>") == []
        assert await session.search_message_id('<we"ird\\id@example.com>') == [odd_uid]
        for bad in ("", "  ", "<>", "<a@b>\r\nA1 DELETE INBOX", "<ключ@example.com>"):
            with pytest.raises(ValueError):
                await session.search_message_id(bad)
        assert not session.broken


# ---------------------------------------------------------------------------------------------
# faults (scripted server)
# ---------------------------------------------------------------------------------------------

_CAPS = b"IMAP4rev1 IDLE MOVE UIDPLUS"


async def greet_and_login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Play the server's part up to a logged-in session that offers MOVE and UIDPLUS."""
    writer.write(b"* OK [CAPABILITY " + _CAPS + b"] scripted server ready\r\n")
    tag, _ = await command(reader)  # CAPABILITY, sent by aioimaplib after the greeting
    writer.write(b"* CAPABILITY " + _CAPS + b"\r\n" + tag + b" OK done\r\n")
    tag, _ = await command(reader)  # LOGIN
    writer.write(tag + b" OK [CAPABILITY " + _CAPS + b"] logged in\r\n")
    await writer.drain()


async def test_silent_server_during_move_times_out() -> None:
    """A server that never answers UID MOVE gives ImapConnectionError and a broken session."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet_and_login(reader, writer)
        tag, _ = await command(reader)  # SELECT
        writer.write(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n" + tag + b" OK selected\r\n")
        await writer.drain()
        await reader.read()  # swallow UID MOVE, never answer

    async with scripted_server(script) as port:
        session = await connect(scripted_endpoint(port, timeout=0.3))
        try:
            await session.select("INBOX")
            with pytest.raises(ImapConnectionError, match="timed out"):
                await asyncio.wait_for(session.move([1], "Archive"), NO_HANG)
            assert session.broken
        finally:
            await session.close()


async def test_create_without_alreadyexists_asks_list() -> None:
    """A server that refuses CREATE without ALREADYEXISTS is asked LIST before it is believed."""
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet_and_login(reader, writer)
        for answer in (
            b"NO Cannot create",  # CREATE "Archive"
            b"OK done",  # LIST "" "Archive"
            b"NO Cannot create",  # CREATE "Gone"
            b"OK done",  # LIST "" "Gone"
        ):
            tag, rest = await command(reader)
            seen.append(rest)
            if rest.startswith(b'LIST "" "Archive"'):
                writer.write(b'* LIST (\\HasNoChildren) "/" {7}\r\nArchive\r\n')
            writer.write(tag + b" " + answer + b"\r\n")
            await writer.drain()
        await reader.read()

    async with scripted_server(script) as port:
        session = await connect(scripted_endpoint(port, timeout=5))
        try:
            await session.create_folder("Archive")
            with pytest.raises(ImapCommandError, match="Cannot create") as caught:
                await session.create_folder("Gone")
            assert caught.value.code is None
            assert not session.broken
        finally:
            await session.close()
    assert seen == [b'CREATE "Archive"', b'LIST "" "Archive"', b'CREATE "Gone"', b'LIST "" "Gone"']


async def test_append_many_files_every_letter_in_one_command(
    dovecot: DovecotServer, target: str
) -> None:
    """MULTIAPPEND stores the letters as given, in order, seen, each at the UID it names."""
    raws = [letter(n, body_size=n * 5_000) for n in range(1, 6)] + [b".dot\r\nstart\r\n"]
    async with session_for(endpoint(dovecot)) as session:
        assert session.has_multiappend
        places = await session.append_many(target, raws, flags=["\\Seen"])
        assert places is not None and len(places) == len(raws)
        assert len({validity for validity, _ in places}) == 1
        uids = [uid for _, uid in places]
        await session.select(target)
        fetched = await session.fetch(uids)
    assert dovecot.uids(USER, target) == uids
    assert [item.raw for item in fetched] == raws
    assert all("\\Seen" in item.flags for item in fetched)


async def test_append_many_to_a_missing_folder_stores_none(dovecot: DovecotServer) -> None:
    """A refused MULTIAPPEND says TRYCREATE and stores none of the letters; the session goes on."""
    missing = unique("sent")
    async with session_for(endpoint(dovecot)) as session:
        with pytest.raises(ImapCommandError) as caught:
            await session.append_many(missing, [letter(1), letter(2)])
        assert caught.value.trycreate
        await session.create_folder(missing)
        assert dovecot.uids(USER, missing) == []
        places = await session.append_many(missing, [letter(3)])
    assert places is not None
    assert dovecot.uids(USER, missing) == [places[0][1]]


async def test_append_many_needs_the_capabilities(dovecot: DovecotServer, target: str) -> None:
    """Without MULTIAPPEND or LITERAL+ nothing is sent: the caller APPENDs one by one."""
    async with session_for(endpoint(dovecot)) as session:
        session.capabilities = session.capabilities - {"LITERAL+"}
        with pytest.raises(ImapCommandError, match="MULTIAPPEND"):
            await session.append_many(target, [letter(1), letter(2)])
        assert await session.append_many(target, []) == []
    assert dovecot.uids(USER, target) == []
