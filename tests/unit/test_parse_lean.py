"""maild's parse skips work mail-parser does for nobody here; what it reads must not change."""

from __future__ import annotations

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
