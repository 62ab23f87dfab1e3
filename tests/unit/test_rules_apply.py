"""The pure half of `maild rules apply`: what the rules read, which letters are decided, --rule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from maild.apply.letters import narrow, needs_header, skip_reason
from maild.core.decision import AccountInfo, LetterFacts, Move
from maild.core.letter import Address, ParsedLetter
from maild.db.stored import RuleLetter
from maild.rules.engine import evaluate
from maild.rules.loader import compile_rules
from maild.rules.models import RuleConfig
from maild.rules.needs import EVERYTHING, needs_of


def _rules(*items: dict[str, Any]) -> list[RuleConfig]:
    return [
        RuleConfig.model_validate({"actions": [{"add_flag": "seen"}], **item}) for item in items
    ]


def test_a_from_rule_reads_the_from_columns_only() -> None:
    """The benchmark's rule needs neither bodies nor the header block."""
    needs = needs_of(_rules({"name": "a", "match": {"address": "from", "matches": "^ivan@"}}))
    assert needs.columns == {"from"} and not needs.headers and not needs.header_if_empty
    assert not needs.body


def test_each_condition_names_what_it_reads() -> None:
    """Recipient means To and Cc, the text body falls back to HTML, attachments their table."""
    match = {
        "all": [
            {"domain": "recipient", "is": "corp.example"},
            {"not": {"body": "text", "contains": "x"}},
            {"any": [{"has_attachment": True}, {"size_over": 10}, {"folder": "INBOX"}]},
        ]
    }
    needs = needs_of(_rules({"name": "a", "match": match}))
    assert needs.columns == {"to", "cc", "text", "html", "attachments"}
    assert needs.body and not needs.headers


def test_header_conditions_need_the_header_block() -> None:
    """Any other header needs it always; the subject and address headers only when empty."""
    subject = needs_of(_rules({"name": "a", "match": {"header": "Subject", "contains": "x"}}))
    assert subject.columns == {"subject"} and subject.header_if_empty == {"subject"}
    other = needs_of(_rules({"name": "a", "match": {"header": "X-Priority", "is": "1"}}))
    assert other.headers
    forward = _rules({"name": "a", "actions": [{"forward": {"to": "x@corp.example"}}]})
    assert needs_of(forward).headers and "from" in needs_of(forward).columns
    assert needs_of(_rules({"name": "a", "match": {"someday": 1}})) == EVERYTHING


def _stored(status: str = "stored", **letter: Any) -> RuleLetter:
    return RuleLetter(
        id=1,
        account_id=1,
        account="sales",
        folder_id=1,
        folder="INBOX",
        status=status,
        direction="in",
        size=100,
        received_at=datetime(2026, 11, 1, tzinfo=UTC),
        letter=ParsedLetter(**letter),
    )


def test_letters_without_what_the_rules_need_are_skipped() -> None:
    """Failed letters always; oversize ones when the rules read the body; unknown accounts."""
    header_only = needs_of(_rules({"name": "a", "match": {"header": "subject", "contains": "x"}}))
    body = needs_of(_rules({"name": "a", "match": {"body": "text", "contains": "x"}}))
    assert "failed" in (skip_reason(_stored("failed"), header_only, {"sales"}) or "")
    assert skip_reason(_stored("oversize"), header_only, {"sales"}) is None
    assert "oversize" in (skip_reason(_stored("oversize"), body, {"sales"}) or "")
    assert "not in the config" in (skip_reason(_stored(), body, {"other"}) or "")
    assert skip_reason(_stored(), body, {"sales"}) is None


def test_the_header_block_is_read_only_where_a_value_is_missing() -> None:
    """A subject rule reads the header of a letter without a subject, not of the others."""
    needs = needs_of(_rules({"name": "a", "match": {"header": "subject", "contains": "x"}}))
    assert needs_header(_stored(subject=""), needs)
    assert not needs_header(_stored(subject="hello"), needs)


def test_narrow_keeps_the_named_rules_after_evaluating_all() -> None:
    """--rule keeps only its rules' effects; an earlier stop still stops the later rules."""
    rules = [
        RuleConfig.model_validate(item)
        for item in (
            {"name": "flag", "actions": [{"add_flag": "flagged"}]},
            {"name": "move", "actions": [{"move": "Archive"}]},
            {"name": "stopper", "actions": [{"stop": True}]},
            {"name": "never", "actions": [{"move": "Never"}]},
        )
    ]
    ruleset = compile_rules(rules, {"sales": AccountInfo()}, source="test")
    letter = ParsedLetter(from_=(Address("ivan@client.example"),))
    decision = evaluate(ruleset, LetterFacts(letter, account="sales", folder="INBOX", size=1))
    only = narrow(decision, frozenset({"move", "never"}))
    assert [hit.rule for hit in only.hits] == ["move"]
    assert only.effects == (Move("Archive"),) and not only.implicit_keep
    assert narrow(decision, frozenset({"never"})).implicit_keep
    assert narrow(decision, None) is decision
