"""maild's parse skips work mail-parser does for nobody here; what it reads must not change."""

from __future__ import annotations

import base64
import hashlib
import random
from pathlib import Path

import mailparser
import pytest

from maild.errors import ParseError
from maild.ingest import parse
from maild.testing.samples import MALFORMED, demo_mailboxes, random_letter

CORPUS = Path(__file__).resolve().parent.parent / "reliability" / "corpus"


def _letters() -> list[bytes]:
    """Everyday, malformed and real-world letters: the shapes maild meets."""
    rng = random.Random(5)
    raws = [random_letter(rng, i, rng.choice((800, 4_000, 30_000))) for i in range(40)]
    raws += list(MALFORMED.values())
    raws += [raw for box in demo_mailboxes().values() for raw in box]
    raws += [path.read_bytes() for path in sorted(CORPUS.rglob("*")) if _is_letter(path)]
    return raws


def _is_letter(path: Path) -> bool:
    """Tell the corpus's letters from its licences and notes."""
    return path.is_file() and path.name not in {"LICENSE", "README.md"}


def _slow_bounded(raw: bytes) -> tuple[bytes, str | None]:
    """Run bounded_header with its fast path turned off."""
    original = parse._surely_within_limits
    parse._surely_within_limits = lambda raw: False
    try:
        return parse.bounded_header(raw)
    finally:
        parse._surely_within_limits = original


def test_lean_parser_reads_what_mail_parser_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every letter parses to the same ParsedLetter with and without mail-parser's summaries."""
    letters = _letters()
    assert len(letters) > 100
    lean = [_outcome(raw) for raw in letters]
    monkeypatch.setattr(parse, "_MailParser", mailparser.MailParser)
    stock = [_outcome(raw) for raw in letters]
    for raw, mine, theirs in zip(letters, lean, stock, strict=True):
        assert mine == theirs, raw[:200]


def test_pieces_and_slices_read_what_one_piece_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Feeding letters in tiny pieces and decoding attachments in odd slices changes nothing."""
    letters = _letters()
    monkeypatch.setattr(parse, "_MailParser", mailparser.MailParser)
    monkeypatch.setattr(parse, "_B64_SLICE", 1 << 40)
    stock = [_outcome(raw) for raw in letters]
    monkeypatch.undo()
    monkeypatch.setattr(parse, "_FEED_BYTES", 7)
    monkeypatch.setattr(parse, "_B64_SLICE", 13)
    sliced = [_outcome(raw) for raw in letters]
    for raw, mine, theirs in zip(letters, sliced, stock, strict=True):
        assert mine == theirs, raw[:200]


_B64 = base64.encodebytes(bytes(range(256)) * 3).decode("ascii")


@pytest.mark.parametrize(
    "payload",
    [
        _B64,
        _B64.replace("\n", "\r\n"),
        _B64.rstrip("\n") + "==",
        _B64[:-3] + "=\n",
        _B64[:-4] + "==\n",
        _B64[:-2] + "A",
        _B64[:-2] + "AB",
        _B64[:400] + "=" + _B64[400:],
        _B64[:400] + "==" + _B64[400:],
        _B64[:401] + "==" + _B64[401:],
        _B64[:402] + "=" + _B64[402:],
        _B64[:300] + " *!\t" + _B64[300:],
        _B64[:300] + "я" + _B64[300:],
        _B64 + "====",
        "=" + _B64,
        "\n" * 40,
        "A" * 101,
        "QUJD" * 50 + "=",
    ],
)
@pytest.mark.parametrize("binary", [True, False])
def test_sliced_base64_digest_is_the_whole_decode(
    monkeypatch: pytest.MonkeyPatch, payload: str, binary: bool
) -> None:
    """An attachment's size and hash come out as from decoding it whole, for any slice size."""
    content = parse._payload_bytes({"payload": payload, "binary": binary})
    whole = (len(content), hashlib.sha256(content).hexdigest())
    try:
        base64.b64decode(payload)
        decodes = True
    except ValueError:
        decodes = False
    for size in (1, 2, 3, 4, 5, 13, 76, 77, 400, 10_000):
        monkeypatch.setattr(parse, "_B64_SLICE", size)
        assert parse._payload_digest({"payload": payload, "binary": binary}) == whole, size
        if binary and decodes:  # the slices did it, not the whole decode as a fallback
            assert parse._b64_digest(payload) == whole, size


def _outcome(raw: bytes) -> object:
    """Give the parsed letter, or the parse error's text."""
    try:
        return parse.parse_letter(raw)
    except ParseError as exc:
        return str(exc)


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: x\r\n" * (parse.MAX_HEADER_FIELDS - 1) + b"\r\nbody\r\n",
        b"Subject: x\r\n" * parse.MAX_HEADER_FIELDS + b"\r\nbody\r\n",
        b"Subject: x\r\n" * (parse.MAX_HEADER_FIELDS + 1) + b"\r\nbody\r\n",
        b"Subject: x\n" * (parse.MAX_HEADER_FIELDS + 5) + b"\nbody\n",
        b"Subject: x\r" * (parse.MAX_HEADER_FIELDS + 5) + b"\rbody\r",
        b"X-Long: " + b"a" * parse.MAX_FIELD_BYTES + b"\r\n\r\nbody\r\n",
        b"X-Long: " + b"a" * (parse.MAX_FIELD_BYTES - 20) + b"\r\n\r\nbody\r\n",
        b"X-Folded: a\r\n" + b" b\r\n" * 2_000 + b"\r\nbody\r\n",
        b"Subject: no body and no empty line\r\n" * 1_200,
        b"Subject: y\r\n\r\n" + b"Subject: z\r\n" * 2_000,
        b"From: a@example.com\r\nSubject: ordinary\r\n\r\nhello\r\n",
    ],
)
def test_fast_header_check_agrees_with_the_split(raw: bytes) -> None:
    """The quick check of the header limits gives exactly what splitting every field gives."""
    assert parse.bounded_header(raw) == _slow_bounded(raw)
