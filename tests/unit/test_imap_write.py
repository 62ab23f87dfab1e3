"""The pure parts of IMAP writes: flag checks, Message-IDs, response codes, COPYUID, LIST."""

from __future__ import annotations

import pytest

from maild.errors import ImapCommandError
from maild.ingest.imap_write import (
    appenduid,
    appenduid_placed,
    appenduid_set,
    check_flag,
    copyuid_map,
    flag_list,
    list_names,
    message_id_value,
    multiappend_head,
    multiappend_tail,
    response_code,
)

ATOM_SPECIALS = set('(){ %*"\\]')


def test_every_printable_ascii_keyword_char_but_the_atom_specials_is_allowed() -> None:
    """The keyword check is exactly RFC 3501's ATOM-CHAR, no more and no less."""
    for code in range(0x80):
        char = chr(code)
        allowed = 0x21 <= code <= 0x7E and char not in ATOM_SPECIALS
        if allowed:
            assert check_flag(f"k{char}") == f"k{char}"
        else:
            with pytest.raises(ValueError):
                check_flag(f"k{char}")


def test_system_flags_get_their_canonical_spelling() -> None:
    """System flags are case-insensitive on the wire; maild sends the usual spelling."""
    assert check_flag("\\SEEN") == "\\Seen"
    assert check_flag("\\deleted") == "\\Deleted"
    for refused in ("\\Recent", "\\*", "\\", "\\Seen "):
        with pytest.raises(ValueError, match="system flag"):
            check_flag(refused)


def test_flag_list_drops_repeats_and_refuses_a_bare_string() -> None:
    """Flags are listed once each, in order; one string is not a list of one-letter flags."""
    assert flag_list(["\\Seen", "\\seen", "a", "a", "$Junk"]) == "(\\Seen a $Junk)"
    assert flag_list([]) == "()"
    with pytest.raises(ValueError, match="sequence"):
        flag_list("\\Seen")


def test_message_id_value() -> None:
    """Angle brackets are added when missing; empty, control and non-ASCII values are refused."""
    assert message_id_value(" <a@b> ") == "<a@b>"
    assert message_id_value("a@b") == "<a@b>"
    for bad in ("", " ", "<>", "<a\r\n@b>", "<a\x00@b>", "<ä@b>", "<" + "x" * 1000 + ">"):
        with pytest.raises(ValueError):
            message_id_value(bad)


def test_response_code() -> None:
    """The code opening a completion text is read, upper case; text without one gives None."""
    assert response_code(b"[TRYCREATE] Mailbox doesn't exist: x") == "TRYCREATE"
    assert response_code(b" [alreadyexists] Mailbox already exists") == "ALREADYEXISTS"
    assert response_code(b"Move completed [NOT A CODE]") is None
    assert response_code(b"") is None
    assert ImapCommandError("x", code="TRYCREATE").trycreate
    assert not ImapCommandError("x").trycreate


def test_copyuid_map_reads_tagged_and_untagged_codes() -> None:
    """COPYUID from an untagged OK (MOVE) or the tagged OK (COPY) maps old UIDs to new ones."""
    lines: list[bytes | bytearray] = [
        b"OK [COPYUID 1795 1:2,7 10:12] Moved UIDs.",
        b"1 EXPUNGE",
        bytearray(b"OK [COPYUID 1795 9 20] Moved UIDs."),
        b"Move completed.",
    ]
    assert copyuid_map(lines, 10) == {1: 10, 2: 11, 7: 12, 9: 20}
    assert copyuid_map([b"[COPYUID 5 3:1 7:9] done"], 3) == {3: 7, 2: 8, 1: 9}


def test_copyuid_map_ignores_sets_that_do_not_fit() -> None:
    """A set larger than the command's, unequal in length or malformed is ignored, not expanded."""
    assert copyuid_map([b"[COPYUID 1 1:4000000000 1:4000000000] huge"], 500) == {}
    assert copyuid_map([b"[COPYUID 1 1:3 5:6] uneven"], 500) == {}
    assert copyuid_map([b"[COPYUID 1 1: 5] cut"], 500) == {}
    assert copyuid_map([b"Copy completed."], 500) == {}


def test_appenduid() -> None:
    """APPENDUID gives the new UID; without it there is none."""
    assert appenduid(b"[APPENDUID 1795 42] Append completed.") == 42
    assert appenduid(b"Append completed.") is None


def test_list_names() -> None:
    """LIST answers give names from atoms, quoted strings and literals; \\Noselect ones are left out."""
    lines: list[bytes | bytearray] = [
        b'(\\HasNoChildren) "/" INBOX',
        b'(\\HasNoChildren) "/" "a \\"b\\" c"',
        b'(\\HasChildren \\Noselect) "/" Parent',
        b'(\\NonExistent) "/" Gone',
        b"(\\HasNoChildren) NIL Flat",
        b'(\\HasNoChildren) "/" {5}',
        bytearray(b"lit()"),
        b"List completed.",
    ]
    assert list_names(lines) == ["INBOX", 'a "b" c', "Flat", "lit()"]


def test_appenduid_placed() -> None:
    """APPENDUID gives the folder's UIDVALIDITY too, so filing a sent letter needs no SELECT."""
    assert appenduid_placed(b"[APPENDUID 1795 42] Append completed.") == (1795, 42)
    assert appenduid_placed(b"Append completed.") is None


def test_appenduid_set() -> None:
    """A MULTIAPPEND's UID set gives one place per letter, in order; anything else gives None."""
    assert appenduid_set(b"[APPENDUID 7 5:7] Append completed.", 3) == [(7, 5), (7, 6), (7, 7)]
    assert appenduid_set(b"[APPENDUID 7 5,9] done", 2) == [(7, 5), (7, 9)]
    assert appenduid_set(b"[APPENDUID 7 5:9] done", 3) is None
    assert appenduid_set(b"[APPENDUID 7 5] done", 2) is None
    assert appenduid_set(b"Append completed.", 1) is None


def test_multiappend_wire() -> None:
    """The command line ends with the first literal; each next letter brings its flags and size."""
    raws = [b"one\r\n", b"second\r\n"]
    assert multiappend_head("(\\Seen)", raws[0]) == "(\\Seen) {5+}"
    assert multiappend_tail("(\\Seen)", raws) == b"one\r\n (\\Seen) {8+}\r\nsecond\r\n\r\n"
    assert multiappend_head("()", raws[0]) == "{5+}"
    assert multiappend_tail("()", raws) == b"one\r\n {8+}\r\nsecond\r\n\r\n"
