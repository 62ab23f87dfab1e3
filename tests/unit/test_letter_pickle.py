"""A parsed letter crosses from a parser process with its text encoded once, and arrives whole."""

from __future__ import annotations

import pickle

from maild.core.decision import LetterFacts
from maild.core.letter import ParsedLetter
from maild.ingest.parse import HashedLetter, parse_and_hash
from maild.rules.engine import evaluate
from maild.rules.loader import compile_rules
from maild.rules.models import RuleConfig

RAW = (
    "From: Anna <anna@client.example>\nSubject: счёт\nContent-Type: text/plain; charset=utf-8\n\n"
    "Reference 42: счёт за поставку\n"
).encode()


def test_parsed_letter_round_trips_with_the_text_sent_as_utf8_only() -> None:
    """The pickle holds the text's bytes once, and the letter comes back equal, hash and all."""
    letter = parse_and_hash(RAW)
    assert letter.text_utf8 == letter.text.encode()
    data = pickle.dumps(letter)
    assert data.count(letter.text_utf8) == 1
    back = pickle.loads(data)
    assert isinstance(back, HashedLetter)
    assert back == letter
    assert (back.text, back.text_utf8, back.raw_sha256) == (
        letter.text,
        letter.text_utf8,
        letter.raw_sha256,
    )


def test_letters_without_utf8_and_with_lone_surrogates_round_trip() -> None:
    """A letter built by hand has no UTF-8 copy; undecodable bytes kept as surrogates survive."""
    plain = ParsedLetter(text="plain")
    assert pickle.loads(pickle.dumps(plain)) == plain
    odd = "x\udcff y"
    kept = ParsedLetter(text=odd, text_utf8=odd.encode("utf-8", "surrogatepass"))
    assert pickle.loads(pickle.dumps(kept)).text == odd


def test_rules_search_the_parsers_utf8_and_agree_with_the_text() -> None:
    """A body condition reads the parser's UTF-8 copy and gives what the text alone gives."""
    rules = compile_rules(
        [
            RuleConfig(
                name="ref",
                match={"body": "text", "contains": "REFERENCE 42"},
                actions=[{"add_flag": "ref"}],
            ),
            RuleConfig(
                name="счёт",
                match={"body": "text", "matches": r"счёт\s+за"},
                actions=[{"add_flag": "inv"}],
            ),
        ],
        {},
        source="t",
    )
    parsed = pickle.loads(pickle.dumps(parse_and_hash(RAW)))
    by_hand = ParsedLetter(text=parsed.text)
    for letter in (parsed, by_hand):
        facts = LetterFacts(letter, account="sales", folder="INBOX", size=len(RAW))
        assert [hit.rule for hit in evaluate(rules, facts).hits] == ["ref", "счёт"]
