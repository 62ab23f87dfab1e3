"""The pure parts of maild.ingest.imap: FETCH parsing, names, UID sets and the aioimaplib overrides."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aioimaplib import aioimaplib as aio

from maild.ingest import imap
from maild.ingest.imap import (
    FetchItem,
    decode_mailbox_name,
    encode_mailbox_name,
    is_loopback,
    parse_fetch_response,
    quote_string,
    uid_chunks,
    uid_set,
)

TAGGED_TEXT = b"Fetch completed (0.002 + 0.000 secs)."


def only(items: list[FetchItem]) -> FetchItem:
    """Return the single parsed item."""
    assert len(items) == 1, items
    return items[0]


# ---------------------------------------------------------------------------------------------
# FETCH response parser
# ---------------------------------------------------------------------------------------------


def test_attributes_before_the_literal() -> None:
    """The usual Dovecot shape (all attributes, then BODY[] {n}, then ")") is fully read."""
    body = b"Subject: hi\r\n\r\nhello\r\n"
    lines = [
        b"1 FETCH (UID 42 RFC822.SIZE 23 FLAGS (\\Seen $Forwarded) "
        b'INTERNALDATE "17-Jul-1996 02:44:25 -0700" BODY[] {23}',
        bytearray(body),
        b")",
        TAGGED_TEXT,
    ]
    item = only(parse_fetch_response(lines))
    assert item == FetchItem(
        seq=1,
        uid=42,
        size=23,
        flags=("\\Seen", "$Forwarded"),
        internaldate=datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7))),
        body=body,
    )


def test_attributes_after_the_literal() -> None:
    """Attributes that follow the literal on the continuation line are read too."""
    lines = [
        b"3 FETCH (BODY[] {5}",
        bytearray(b"hello"),
        b' UID 7 FLAGS (\\Seen) INTERNALDATE "01-Jan-2024 00:00:00 +0000" RFC822.SIZE 5)',
        TAGGED_TEXT,
    ]
    item = only(parse_fetch_response(lines))
    assert (item.seq, item.uid, item.size, item.flags, item.body) == (
        3,
        7,
        5,
        ("\\Seen",),
        b"hello",
    )
    assert item.internaldate == datetime(2024, 1, 1, tzinfo=UTC)


def test_attributes_around_the_literal() -> None:
    """Attributes split across both sides of the literal end up in one item."""
    lines = [b"9 FETCH (UID 70 BODY[] {3}", bytearray(b"abc"), b" FLAGS ())", TAGGED_TEXT]
    item = only(parse_fetch_response(lines))
    assert (item.uid, item.flags, item.body) == (70, (), b"abc")


def test_several_items_and_foreign_lines() -> None:
    """Items are split correctly and unrelated untagged lines and the tagged text are skipped."""
    lines = [
        b"OK [HIGHESTMODSEQ 7] whatever",
        b"1 FETCH (UID 10 RFC822.SIZE 1 BODY[] {1}",
        bytearray(b"a"),
        b")",
        b"5 EXISTS",
        b"2 FETCH (UID 11 RFC822.SIZE 2 BODY[] {2}",
        bytearray(b"bb"),
        b")",
        b"3 FETCH (UID 12 RFC822.SIZE 3)",
        TAGGED_TEXT,
    ]
    items = parse_fetch_response(lines)
    assert [(i.seq, i.uid, i.size, i.body) for i in items] == [
        (1, 10, 1, b"a"),
        (2, 11, 2, b"bb"),
        (3, 12, 3, None),
    ]


def test_literal_that_looks_like_protocol_is_opaque() -> None:
    """A letter containing FETCH lines, parentheses and {n} markers does not confuse the parser."""
    evil = b"* 2 FETCH (UID 99 BODY[] {3}\r\n)))(((\r\n{12}\r\nA1 OK done\r\n"
    lines = [
        b"1 FETCH (UID 5 RFC822.SIZE %d BODY[] {%d}" % (len(evil), len(evil)),
        bytearray(evil),
        b")",
        b"2 FETCH (UID 6 BODY[] {2}",
        bytearray(b"ok"),
        b")",
        TAGGED_TEXT,
    ]
    items = parse_fetch_response(lines)
    assert [(i.uid, i.body) for i in items] == [(5, evil), (6, b"ok")]


def test_literal_of_a_line_that_is_not_fetch_is_skipped() -> None:
    """A literal after a non-FETCH line is skipped, even if its content looks like a FETCH line."""
    lines = [b"OK something {13}", bytearray(b"1 FETCH (UID 1"), TAGGED_TEXT]
    assert parse_fetch_response(lines) == []


@pytest.mark.parametrize(
    ("flags_text", "expected"),
    [
        (b"()", ()),
        (b"(\\Seen)", ("\\Seen",)),
        (b"(\\Seen \\Answered \\Flagged \\Deleted \\Draft \\Recent)", None),
        (b"($Junk NonJunk $label1)", ("$Junk", "NonJunk", "$label1")),
    ],
)
def test_flags(flags_text: bytes, expected: tuple[str, ...] | None) -> None:
    """FLAGS lists come back as tuples of strings, system flags with their backslash."""
    line = b"1 FETCH (UID 1 FLAGS %s)" % flags_text
    item = only(parse_fetch_response([line, TAGGED_TEXT]))
    if expected is None:
        expected = tuple(flags_text[1:-1].decode().split())
    assert item.flags == expected


def test_missing_flags_stay_none() -> None:
    """An item without FLAGS says None, which differs from an empty FLAGS list."""
    item = only(parse_fetch_response([b"1 FETCH (UID 1)", TAGGED_TEXT]))
    assert item.flags is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"01-Jan-2024 10:11:12 +0000", datetime(2024, 1, 1, 10, 11, 12, tzinfo=UTC)),
        (
            b" 7-Feb-2025 23:59:59 +0530",
            datetime(2025, 2, 7, 23, 59, 59, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        (
            b"29-Feb-2024 00:00:00 -1200",
            datetime(2024, 2, 29, tzinfo=timezone(-timedelta(hours=12))),
        ),
        (b"31-dec-1999 12:00:00 +0100", datetime(1999, 12, 31, 11, 0, tzinfo=UTC)),
        (b"30-Feb-2024 00:00:00 +0000", None),
        (b"01-Foo-2024 00:00:00 +0000", None),
        (b"yesterday", None),
    ],
)
def test_internaldate(text: bytes, expected: datetime | None) -> None:
    """INTERNALDATE is parsed independently of the locale, and a bad one becomes None."""
    line = b'1 FETCH (UID 1 INTERNALDATE "%s")' % text
    item = only(parse_fetch_response([line, TAGGED_TEXT]))
    assert item.internaldate == expected


@pytest.mark.parametrize(
    "section",
    [
        b"BODY[]",
        b"BODY[HEADER]",
        b"BODY[TEXT]",
        b"BODY[]<0>",
        b"BODY[HEADER.FIELDS (FROM TO SUBJECT)]",
        b"RFC822",
        b"RFC822.HEADER",
        b"body[header]",
    ],
)
def test_body_sections(section: bytes) -> None:
    """Whatever section name the server echoes, its literal is taken as the body."""
    lines = [b"1 FETCH (UID 3 %s {4}" % section, bytearray(b"data"), b")", TAGGED_TEXT]
    item = only(parse_fetch_response(lines))
    assert (item.uid, item.body) == (3, b"data")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"NIL", None),
        (b'"abc"', b"abc"),
        (b'""', b""),
        (b'"a\\"b\\\\c"', b'a"b\\c'),
        (b'"with (paren"', b"with (paren"),
    ],
)
def test_non_literal_bodies(value: bytes, expected: bytes | None) -> None:
    """A body sent as NIL or as a quoted string is understood, escapes and parentheses included."""
    line = b"1 FETCH (UID 3 BODY[] %s FLAGS (\\Seen))" % value
    item = only(parse_fetch_response([line, TAGGED_TEXT]))
    assert (item.uid, item.body, item.flags) == (3, expected, ("\\Seen",))


def test_zero_length_literal() -> None:
    """An empty literal gives an empty body, not a missing one."""
    lines = [b"1 FETCH (UID 8 RFC822.SIZE 0 BODY[] {0}", bytearray(), b")", TAGGED_TEXT]
    item = only(parse_fetch_response(lines))
    assert (item.uid, item.size, item.body) == (8, 0, b"")


def test_literal_given_as_bytes() -> None:
    """The literal is recognised by its position after {n}, not by being a bytearray."""
    lines = [b"1 FETCH (UID 8 BODY[] {3}", b"xyz", b")", TAGGED_TEXT]
    assert only(parse_fetch_response(lines)).body == b"xyz"


def test_unsolicited_fetch_without_uid() -> None:
    """A flag update pushed by the server carries no UID, which the caller can see and skip."""
    item = only(parse_fetch_response([b"4 FETCH (FLAGS (\\Deleted))", TAGGED_TEXT]))
    assert (item.seq, item.uid, item.flags) == (4, None, ("\\Deleted",))


def test_star_prefix_and_lowercase() -> None:
    """A leading "* " and lowercase attribute names are accepted."""
    item = only(parse_fetch_response([b"* 2 fetch (uid 5 rfc822.size 9 flags ())"]))
    assert (item.seq, item.uid, item.size, item.flags) == (2, 5, 9, ())


def test_item_cut_short_before_the_next() -> None:
    """An item whose closing parenthesis never came does not swallow the next item."""
    lines = [
        b"1 FETCH (UID 1 BODY[] {3}",
        bytearray(b"abc"),
        b"2 FETCH (UID 2 BODY[] {2}",
        bytearray(b"de"),
        b")",
    ]
    items = parse_fetch_response(lines)
    assert [(i.uid, i.body) for i in items] == [(1, b"abc"), (2, b"de")]


@pytest.mark.parametrize(
    "lines",
    [
        [b"1 FETCH ("],
        [b"1 FETCH (UID"],
        [b"1 FETCH (UID x RFC822.SIZE -1)"],
        [b"1 FETCH ((()"],
        [b"1 FETCH (UID 1 FLAGS (\\Seen"],
        [b'1 FETCH (UID 1 ]]] "unterminated'],
        [b"1 FETCH (UID 1 BODY[] {5}"],
        [b"1 FETCH (UID 1 BODY[HEADER {5}", bytearray(b"hello")],
        [b'1 FETCH ("UID" 1 NIL NIL) ) ) (', b"))))"],
        [b"1 FETCH (UID 1 FLAGS NIL BODY[] NIL INTERNALDATE NIL RFC822.SIZE NIL)"],
        [b"\xff\xfe 1 FETCH (\x00\x01)", b"1 FETCH (\xff UID 2)"],
    ],
)
def test_garbage_never_raises(lines: list[bytes | bytearray]) -> None:
    """Malformed responses give partial items instead of exceptions."""
    for item in parse_fetch_response(lines):
        assert isinstance(item, FetchItem)


def _render_item(rng: random.Random, seq: int, uid: int) -> tuple[list[bytes], dict[str, Any]]:
    """Render one random FETCH item in any legal attribute order, with its expected values."""
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
    flags = tuple(
        rng.sample(["\\Seen", "\\Flagged", "$Label1", "\\Answered", "Junk"], rng.randrange(0, 4))
    )
    date = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**8))
    attrs = [
        b"UID %d" % uid,
        b"RFC822.SIZE %d" % len(body),
        b"FLAGS (" + " ".join(flags).encode() + b")",
        b'INTERNALDATE "' + date.strftime("%d-%b-%Y %H:%M:%S +0000").encode() + b'"',
    ]
    rng.shuffle(attrs)
    cut = rng.randrange(len(attrs) + 1)
    before, after = attrs[:cut], attrs[cut:]
    head = b"%d FETCH (" % seq + b"".join(a + b" " for a in before) + b"BODY[] {%d}" % len(body)
    tail = b"".join(b" " + a for a in after) + b")"
    expected = {"uid": uid, "size": len(body), "flags": flags, "internaldate": date, "body": body}
    return [head, bytearray(body), tail], expected


def test_random_items_round_trip() -> None:
    """Hundreds of randomly ordered items parse to exactly what was rendered."""
    rng = random.Random(20240501)
    lines: list[bytes | bytearray] = []
    expected = []
    for seq in range(1, 400):
        rendered, values = _render_item(rng, seq, seq * 3)
        lines.extend(rendered)
        expected.append(values)
        if rng.random() < 0.1:
            lines.append(b"%d EXISTS" % (seq + 1000))
    lines.append(TAGGED_TEXT)
    items = parse_fetch_response(lines)
    got = [
        {
            "uid": i.uid,
            "size": i.size,
            "flags": i.flags,
            "internaldate": i.internaldate,
            "body": i.body,
        }
        for i in items
    ]
    assert got == expected


def test_fast_and_general_paths_agree() -> None:
    """The regex fast path and the general tokenizer give identical items on the common shape."""
    rng = random.Random(7)
    for seq in range(1, 200):
        rendered, _ = _render_item(rng, seq, seq)
        if rendered[2] != b")":
            rendered = [rendered[0], rendered[1], b")"]
        fast = imap._simple_parse(rendered, 0)
        assert fast is not None
        assert fast == imap._general_parse(rendered, 0)
    for line in (b"1 FETCH (UID 5 RFC822.SIZE 9)", b"1 FETCH (UID 5 FLAGS (\\Seen $x))"):
        fast = imap._simple_parse([line], 0)
        assert fast is not None
        assert fast == imap._general_parse([line], 0)


# ---------------------------------------------------------------------------------------------
# Mailbox names, quoting, UID sets, loopback
# ---------------------------------------------------------------------------------------------

MUTF7_VECTORS = [
    ("INBOX", "INBOX"),
    ("Sent Items", "Sent Items"),
    ("&", "&-"),
    ("Tom & Jerry", "Tom &- Jerry"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("台北", "&U,BTFw-"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 5.1.3
    ("Входящие", "&BBIERQQ+BDQETwRJBDgENQ-"),
    ("Заявки/2024", "&BBcEMARPBDIEOgQ4-/2024"),
    ("📧", "&2D3c5w-"),
    ("a\tb", "a&AAk-b"),
]


@pytest.mark.parametrize(("name", "wire"), MUTF7_VECTORS)
def test_modified_utf7_vectors(name: str, wire: str) -> None:
    """Folder names are encoded as RFC 3501 modified UTF-7, including the RFC's own example."""
    assert encode_mailbox_name(name) == wire
    assert decode_mailbox_name(wire) == name


def test_modified_utf7_matches_the_utf7_codec() -> None:
    """Non-ASCII runs are base64 of UTF-16BE, the same bytes Python's UTF-7 codec produces."""
    for text in ["Входящие", "台北", "Ωμέγα", "📧📨"]:
        standard = text.encode("utf-7").decode("ascii")  # +BASE64- with '/' and no '&'
        assert encode_mailbox_name(text) == "&" + standard[1:].replace("/", ",")


def test_modified_utf7_round_trips_random_text() -> None:
    """Any Unicode name survives encoding and decoding, and the encoding is printable ASCII."""
    rng = random.Random(3)
    alphabet = "abcXYZ &-/.~" + "".join(chr(c) for c in (0xE9, 0x416, 0x4E2D, 0x1F4E7, 0x7F, 0x0))
    for _ in range(500):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        wire = encode_mailbox_name(name)
        assert all(" " <= c <= "~" for c in wire)
        assert decode_mailbox_name(wire) == name


@pytest.mark.parametrize("wire", ["&Jjo!", "a&", "&AAk", "&#$%-", "&AOk-&"])
def test_modified_utf7_rejects_garbage(wire: str) -> None:
    """Broken modified UTF-7 from a server is an error, not silently mangled text."""
    with pytest.raises(ValueError, match="modified UTF-7"):
        decode_mailbox_name(wire)


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("INBOX", '"INBOX"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("", '""'),
    ],
)
def test_quote_string(value: str, quoted: str) -> None:
    """Quoted strings escape backslash and double quote, since aioimaplib sends arguments raw."""
    assert quote_string(value) == quoted


@pytest.mark.parametrize(
    ("uids", "wire"),
    [
        ([], ""),
        ([5], "5"),
        ([1, 2, 3], "1:3"),
        ([1, 2, 3, 5, 7, 8], "1:3,5,7:8"),
        ([2, 4, 6], "2,4,6"),
    ],
)
def test_uid_set(uids: list[int], wire: str) -> None:
    """Sorted UIDs are compressed into ranges, keeping command lines short."""
    assert uid_set(uids) == wire


def test_uid_chunks_sort_dedupe_and_bound() -> None:
    """UIDs are sorted, de-duplicated and split into groups no larger than asked."""
    chunks = list(uid_chunks([9, 1, 3, 3, 2, *range(100, 1300)], 500))
    assert [len(c) for c in chunks] == [500, 500, 204]
    assert chunks[0][:4] == [1, 2, 3, 9]
    assert [uid for chunk in chunks for uid in chunk] == sorted({9, 1, 3, 2, *range(100, 1300)})
    assert list(uid_chunks([], 150)) == []
    with pytest.raises(ValueError, match="start at 1"):
        list(uid_chunks([0, 1], 150))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("imap.example.com", False),
        ("localhost.example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    """Only 127.0.0.0/8, ::1 and localhost count as loopback for plaintext IMAP."""
    assert is_loopback(host) is loopback


# ---------------------------------------------------------------------------------------------
# aioimaplib overrides
# ---------------------------------------------------------------------------------------------


class FakeTransport(asyncio.Transport):
    """Records what the protocol writes; nothing goes on a network."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def selected_protocol(cls: type[Any]) -> tuple[Any, FakeTransport]:
    """Build a protocol of ``cls`` on a fake transport, already in the SELECTED state."""
    protocol = cls(asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.state = aio.SELECTED
    protocol.capabilities = {"IMAP4REV1", "IDLE"}
    return protocol, transport


async def start_fetch(protocol: Any, transport: FakeTransport) -> tuple[asyncio.Task[Any], bytes]:
    """Start a UID FETCH on the protocol and give the task and the tag it was sent with."""
    task = asyncio.ensure_future(protocol.fetch("1:*", "(UID FLAGS)", by_uid=True))
    for _ in range(10):
        await asyncio.sleep(0)
        if transport.written:
            break
    tag = transport.written[-1].split(b" ", 1)[0]
    return task, tag


def fetch_response(tag: bytes, count: int) -> bytes:
    """Render a FETCH response of ``count`` one-line items followed by the tagged OK."""
    body = b"".join(b"* %d FETCH (UID %d FLAGS (\\Seen))\r\n" % (n, n) for n in range(1, count + 1))
    return body + tag + b" OK Fetch completed.\r\n"


def literal_response(tag: bytes) -> bytes:
    """Render a response mixing literals, attributes after literals and unrelated lines."""
    return (
        b"* 1 FETCH (UID 1 RFC822.SIZE 12 BODY[] {12}\r\nline1\r\n(((\r\n)"
        b"\r\n* 2 FETCH (BODY[] {0}\r\n UID 2 FLAGS (\\Seen))\r\n"
        b"* 3 EXISTS\r\n"
        b"* 3 FETCH (UID 3 BODY[HEADER] {8}\r\nA: b\r\n\r\n FLAGS ())\r\n" + tag + b" OK done\r\n"
    )


async def test_five_thousand_line_response_does_not_recurse() -> None:
    """A 5,000-line FETCH response is read without RecursionError (aioimaplib issue #118)."""
    protocol, transport = selected_protocol(imap._Protocol)
    task, tag = await start_fetch(protocol, transport)
    protocol.data_received(fetch_response(tag, 5000))
    response = await asyncio.wait_for(task, 5)
    assert response.result == "OK"
    assert len(response.lines) == 5001
    assert protocol.failure is None
    assert [i.uid for i in parse_fetch_response(response.lines)] == list(range(1, 5001))


async def test_stock_protocol_still_recurses() -> None:
    """The stock parser crashes on the same response, which is why the override exists."""
    protocol, transport = selected_protocol(aio.IMAP4ClientProtocol)
    task, tag = await start_fetch(protocol, transport)
    with pytest.raises(RecursionError):
        protocol.data_received(fetch_response(tag, 5000))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def responses_for(cls: type[Any], pieces: list[int], make: Any) -> list[Any]:
    """Feed a response in the given pieces to a fresh protocol and give the lines it built."""
    return [bytes(line) for line in await _response_lines(cls, pieces, make)]


async def _response_lines(cls: type[Any], pieces: list[int], make: Any) -> list[Any]:
    """Feed a response in pieces of the given sizes and give its lines as the protocol built them."""
    protocol, transport = selected_protocol(cls)
    task, tag = await start_fetch(protocol, transport)
    data = make(tag)
    if not pieces:
        protocol.data_received(data)
    else:
        offset = 0
        for size in pieces:
            protocol.data_received(data[offset : offset + size])
            offset += size
        protocol.data_received(data[offset:])
    response = await asyncio.wait_for(task, 5)
    return list(response.lines)


async def test_split_reads_give_the_same_response() -> None:
    """Any split of the byte stream (inside lines, CRLFs and literals) gives the same response."""
    whole = await responses_for(imap._Protocol, [], literal_response)
    stock = await responses_for(aio.IMAP4ClientProtocol, [], literal_response)
    assert whole == stock
    rng = random.Random(11)
    for split in ([1] * 200, [2] * 100, [7] * 30, [13, 1, 1, 40, 2]):
        assert await responses_for(imap._Protocol, split, literal_response) == whole
    for _ in range(30):
        split = [rng.randrange(1, 20) for _ in range(rng.randrange(1, 15))]
        assert await responses_for(imap._Protocol, split, literal_response) == whole
    items = parse_fetch_response(whole)
    assert [(i.uid, i.body) for i in items] == [
        (1, b"line1\r\n(((\r\n"),
        (2, b""),
        (3, b"A: b\r\n\r\n"),
    ]


async def test_a_literal_is_one_bytes_object_the_parser_keeps_without_copying() -> None:
    """A letter read in pieces becomes bytes once, and the fetched item holds that very object."""
    response = await _response_lines(imap._Protocol, [5, 3, 9, 1, 1], literal_response)
    literals = [line for line in response if type(line) is bytes and line.startswith(b"line1")]
    assert literals == [b"line1\r\n(((\r\n"]
    assert parse_fetch_response(response)[0].body is literals[0]


async def test_data_received_does_not_format_debug_output(caplog: pytest.LogCaptureFixture) -> None:
    """Reads are not formatted into a debug message (two thirds of the stock fetch CPU)."""
    protocol, transport = selected_protocol(imap._Protocol)
    task, tag = await start_fetch(protocol, transport)
    with caplog.at_level(logging.DEBUG, logger="aioimaplib.aioimaplib"):
        protocol.data_received(fetch_response(tag, 3))
        await asyncio.wait_for(task, 5)
    assert not [r for r in caplog.records if "Received" in r.getMessage()]
    assert protocol.bytes_received == len(fetch_response(tag, 3))


async def test_incremental_wait_data_matches_the_stock_rescan() -> None:
    """The incremental parenthesis count answers wait_data exactly like the stock rescan."""
    rng = random.Random(5)
    pieces = [b"1 FETCH (", b"2 FETCH (UID 1", b"(", b")", b"))", b"x", b" FLAGS (\\Seen)"]
    for _ in range(200):
        ours = imap._FetchCommand("T1", "1", "(UID)", loop=asyncio.get_running_loop())
        stock = aio.FetchCommand("T1", "1", "(UID)", loop=asyncio.get_running_loop())
        for _ in range(rng.randrange(1, 12)):
            line: bytes | bytearray = b"".join(rng.choices(pieces, k=rng.randrange(1, 4)))
            if rng.random() < 0.2:
                line = bytearray(b"((( literal")
            ours.append_to_resp(line)
            stock.append_to_resp(line)
            assert ours.wait_data() == stock.wait_data()


async def test_untagged_changes_are_counted_outside_select() -> None:
    """EXISTS/EXPUNGE pushed while no SELECT runs are counted, and a BYE is remembered."""
    protocol, _ = selected_protocol(imap._Protocol)
    protocol._untagged_response(b"* 5 EXISTS")
    protocol._untagged_response(b"* 2 EXPUNGE")
    protocol._untagged_response(b"* 5 RECENT")
    assert protocol.mailbox_changes == 2
    protocol.pending_sync_command = aio.Command("SELECT", "T9", '"INBOX"')
    protocol._untagged_response(b"* 9 EXISTS")
    assert protocol.mailbox_changes == 2
    protocol.pending_sync_command = None
    protocol._untagged_response(b"* BYE Server shutting down.")
    assert protocol.bye == b"BYE Server shutting down."


def test_aioimaplib_version_is_the_pinned_one() -> None:
    """The overrides target aioimaplib 2.0.3 internals; another version must be re-checked first."""
    assert importlib.metadata.version("aioimaplib") == "2.0.3"
