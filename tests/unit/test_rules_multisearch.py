"""The shared needle search: one pass per view answers every contains and regex prefilter."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from maild.core.decision import AccountInfo, LetterFacts
from maild.core.letter import Address, AttachmentInfo, ParsedLetter
from maild.rules.engine import evaluate
from maild.rules.loader import compile_rules
from maild.rules.models import RuleConfig
from maild.rules.multisearch import MultiSearch, encode
from maild.rules.needles import fold_for_regex

ACCOUNTS = {"sales": AccountInfo(("INBOX",), "Trash")}


def hits(letter: ParsedLetter, *matches: dict[str, Any]) -> list[str]:
    """Give the names of the rules (one per match table, named r0, r1, ...) that hit a letter."""
    rules = [
        RuleConfig(name=f"r{index}", match=match, actions=[{"add_flag": f"f{index}"}])
        for index, match in enumerate(matches)
    ]
    ruleset = compile_rules(rules, ACCOUNTS, source="t")
    facts = LetterFacts(letter, account="sales", folder="INBOX", size=10)
    return [result.rule for result in evaluate(ruleset, facts).hits]


def test_multisearch_finds_overlapping_and_one_byte_needles() -> None:
    """Overlapping needles ("ref" inside "reference") and one-byte needles are all reported."""
    search = MultiSearch(["reference", "ref", "fer", "5", "-", "счёт", "zzz"])
    found = search.present(encode("a reference 5 счёт"))
    assert found == {"reference", "ref", "fer", "5", "счёт"}
    assert MultiSearch([]).present(b"anything") == set()
    with pytest.raises(ValueError, match="empty"):
        MultiSearch([""])


def test_multisearch_survives_lone_surrogates() -> None:
    """A value holding a lone surrogate (undecodable bytes kept by the parser) is searchable."""
    assert MultiSearch(["ab"]).present(encode("x\udcffab")) == {"ab"}


def test_needles_shared_between_rules() -> None:
    """Rules sharing and overlapping needles on one view each get their own exact answer."""
    letter = ParsedLetter(text="Please see our Reference 77 and order  #351234.")
    assert hits(
        letter,
        {"body": "text", "contains": "reference"},
        {"body": "text", "contains": "ref"},
        {"body": "text", "contains": "refund"},
        {"body": "text", "contains": ["refund", "order"]},
        {"body": "text", "matches": r"reference\s+77"},
        {"body": "text", "matches": r"order\s+#?35\d{4}"},
        {"body": "text", "matches": r"order\s+#?36\d{4}"},
        {"body": "text", "contains": "Reference", "case_sensitive": True},
        {"body": "text", "contains": "reference", "case_sensitive": True},
        {"body": "text", "matches": r"Reference", "case_sensitive": True},
        {"body": "text", "matches": r"REFERENCE", "case_sensitive": True},
    ) == ["r0", "r1", "r3", "r4", "r5", "r7", "r9"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("\u0130nvoice", "invoice"),  # İ lower-cases to i + combining dot: no "invoice"
        ("\u0130nvoice", "i\u0307nvoice"),
        ("\u0131nvoice", "invoice"),  # dotless i stays dotless under lower()
        ("\u017ftatus", "status"),  # long s stays long s under lower()
        ("\u212aey", "key"),  # the Kelvin sign lower-cases to k
        ("СЧЁТ 42", "счёт"),
        ("Straße", "STRASSE"),
        ("plain ASCII Invoice", "invoice"),
    ],
)
def test_contains_folds_like_lower(text: str, needle: str) -> None:
    """``contains`` holds exactly when ``needle.lower() in text.lower()``, as before."""
    expected = needle.lower() in text.lower()
    assert bool(hits(ParsedLetter(text=text), {"body": "text", "contains": needle})) is expected
    # The same with an ASCII-only needle set on the view and with a regex beside it.
    both = hits(
        ParsedLetter(text=text),
        {"body": "text", "contains": needle},
        {"body": "text", "matches": r"status|key"},
    )
    assert ("r0" in both) is expected


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("\u0130nvoice attached", r"invoice\s+attached"),
        ("\u0131nvoice attached", r"invoice\s+attached"),
        ("\u017ftatus: paid", r"status:\s+paid"),
        ("\u212aey 5", r"key\s+5"),
        ("СЧЁТ 42 invoice", r"invoice"),
        ("nothing here", r"invoice"),
    ],
)
def test_regex_prefilter_folds_like_ignorecase(text: str, pattern: str) -> None:
    """The shared prefilter, beside a non-ASCII contains needle, never hides a match."""
    expected = re.search(pattern, text, re.IGNORECASE) is not None
    result = hits(
        ParsedLetter(text=text),
        {"body": "text", "matches": pattern},
        {"body": "text", "contains": "счёт"},
    )
    assert ("r0" in result) is expected
    assert bool(hits(ParsedLetter(text=text), {"body": "text", "matches": pattern})) is expected


def test_fold_for_regex_maps_the_three_characters() -> None:
    """Dotted capital I, dotless i and long s fold to the ASCII letters IGNORECASE matches."""
    assert fold_for_regex("\u0130\u0131\u017fA") == "iisa"


def test_multi_value_views_match_on_any_value() -> None:
    """Several recipients, attachments or repeated headers: one matching value is enough."""
    letter = ParsedLetter(
        to=(Address("a@one.example", "Anna"), Address("b@two.example", "Boris")),
        cc=(Address("c@three.example", "Clara Reference"),),
        attachments=(
            AttachmentInfo(position=0, filename="notes.txt", content_type="text/plain", size=1),
            AttachmentInfo(position=1, filename="Q3-Report.XLSX", content_type="x", size=1),
        ),
        headers={"received": "from a.example\nfrom b.example"},
    )
    assert hits(
        letter,
        {"address": "recipient", "contains": "two.example"},
        {"domain": "recipient", "contains": "three"},
        {"display_name": "recipient", "contains": "reference"},
        {"attachment": "name", "contains": "report"},
        {"attachment": "name", "matches": r"report\.xlsx$"},
        {"attachment": "name", "matches": r"notes\.xlsx$"},
        {"header": "received", "contains": "b.example"},
        {"header": "received", "matches": r"from\s+b\.example"},
        {"header": "received", "matches": r"from\s+c\.example"},
        {"attachment": "name", "contains": "report", "case_sensitive": True},
    ) == ["r0", "r1", "r2", "r3", "r4", "r6", "r7"]


def test_regex_literals_are_checked_per_value() -> None:
    """A regex needing two literals runs only on a value holding both, not on their union."""
    letter = ParsedLetter(
        attachments=(
            AttachmentInfo(position=0, filename="order.txt", content_type="x", size=1),
            AttachmentInfo(position=1, filename="35.pdf", content_type="x", size=1),
        )
    )
    assert hits(letter, {"attachment": "name", "matches": r"order.*35"}) == []
    assert hits(letter, {"attachment": "name", "matches": r"order|35"}) == ["r0"]


def test_multisearch_reports_each_needle_once_however_often_it_occurs() -> None:
    """A common word is reported once, beside the rare ones, in every search."""
    search = MultiSearch(["order", "reference 7", "rare"])
    for _ in range(3):
        assert search.present(b"an order, another order" * 100) == {"order"}
    assert search.present(b"reference 7 rare") == {"reference 7", "rare"}
    assert search.present(b"order reference 7") == {"order", "reference 7"}
    assert search.present(b"nothing") == set()


def test_caseless_search_folds_exactly_like_bytes_lower() -> None:
    """Caseless, every byte matches exactly the bytes that ``bytes.lower`` makes equal to it."""
    for needle in range(256):
        search = MultiSearch([bytes([needle]).decode("latin-1")], caseless=True)
        expected = bytes([needle]).lower()
        if needle >= 0x80:  # a needle is a str: its UTF-8 is what is searched for
            continue
        for byte in range(256):
            found = bool(search.present(bytes([byte])))
            assert found is (bytes([byte]).lower() == expected), (needle, byte)
    search = MultiSearch(["счёт", "invoice"], caseless=True)
    assert search.present(encode("СЧЁТ INVOICE")) == {"invoice"}  # ASCII folding only
    assert search.present(encode("счёт Invoice")) == {"счёт", "invoice"}


def test_needles_with_regex_syntax_and_nul_bytes_are_literal() -> None:
    """Needles are searched byte for byte: regex syntax means nothing, a NUL byte is allowed."""
    search = MultiSearch(["a.b", "(x|y)", "\\d", "a\x00b", "[", "é"])
    assert search.present(b"axb x y 5 a") == set()
    assert search.present(encode("a.b (x|y) \\d a\x00b [ é")) == set(search.needles)


def test_each_thread_gets_its_own_scratch() -> None:
    """Two threads searching at once each use their own scratch space, so neither fails."""
    search = MultiSearch(["needle"])
    text = b"hay " * 50_000 + b"needle"
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: search.present(text), range(64)))
    assert results == [{"needle"}] * 64
