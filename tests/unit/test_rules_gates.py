"""Rule gates: calling only the rules a letter can match gives exactly the ungated Decision."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest

from maild.core.decision import AccountInfo, Decision, LetterFacts
from maild.core.letter import Address, AttachmentInfo, ParsedLetter
from maild.errors import ParseError
from maild.ingest.parse import parse_letter
from maild.rules.engine import RuleSet, evaluate
from maild.rules.loader import compile_rules
from maild.rules.models import RuleConfig
from maild.testing import samples

ACCOUNTS = {
    "sales": AccountInfo(watched=("INBOX", "Leads/Web"), deleted="Trash", address=samples.SALES),
    "support": AccountInfo(watched=("INBOX",), deleted="Deleted Items"),
}
PLACES = [("sales", "INBOX"), ("sales", "Leads/Web"), ("support", "INBOX")]
WORDS = [
    "order",
    "Order",
    "quote",
    "INVOICE",
    "invoice",
    "delivery",
    "заказ",
    "СЧЁТ",
    "Request 1",
    "request",
    "X-42",
    "pdf",
    "1",
    "",
    "anna",
    "Anna Petrova",
    "\u212aey",
]
ADDRESSES = [
    "anna.petrova@client-one.example",
    "IVAN@stroy-torg.example",
    "<sales@corp.example>",
    "support@corp.example",
    "nobody@nowhere.example",
]
DOMAINS = ["client-one.example", "@Stroy-Torg.Example", "corp.example", "acme.example."]
PATTERNS = [
    r"order\s+\w+",
    r"^re:\s*quote",
    r"request \d+",
    r"(quote|invoice)",
    r"\d{2,}",
    r"x-42",
    r"pdf$",
    r"заказ\s+\S+",
    r"Anna P",
    r"regards\W+thanks",
    r"^$",
]


def leaf(rng: random.Random) -> dict[str, Any]:
    """Draw one leaf condition of any kind, operator and case mode."""
    kind = rng.choice(
        [
            *("header", "header", "address", "domain", "display_name", "body", "body"),
            *("attachment", "has_attachment", "size_over", "size_under", "account", "folder"),
        ]
    )
    if kind == "has_attachment":
        return {"has_attachment": rng.random() < 0.7}
    if kind in ("size_over", "size_under"):
        return {kind: rng.choice([0, 3_000, 20_000])}
    if kind == "account":
        return {"account": rng.choice(["sales", "support", ["sales", "support"]])}
    if kind == "folder":
        return {"folder": rng.choice(["INBOX", ["INBOX"]])}
    part = {
        "header": ["subject", "from", "to", "x-priority", "received", "message-id"],
        "address": ["from", "to", "cc", "reply_to", "recipient"],
        "domain": ["from", "to", "cc", "reply_to", "recipient"],
        "display_name": ["from", "to", "cc", "reply_to", "recipient"],
        "body": ["text", "html"],
        "attachment": ["name", "type"],
    }[kind]
    node: dict[str, Any] = {kind: rng.choice(part)}
    operator = rng.choice(["is", "contains", "contains", "matches", "matches", "exists"])
    if operator == "exists":
        node["exists"] = rng.random() < 0.7
        return node
    pool = {"address": ADDRESSES, "domain": DOMAINS}.get(kind, WORDS)
    if operator == "matches":
        pool = PATTERNS
    values = [rng.choice(pool) for _ in range(rng.choice([1, 1, 2]))]
    if operator != "is":
        values = [value for value in values if value] or ["order"]
    node[operator] = values[0] if len(values) == 1 and rng.random() < 0.5 else values
    if kind not in ("address", "domain") and rng.random() < 0.25:
        node["case_sensitive"] = rng.random() < 0.6
    return node


def condition(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """Draw a condition tree: leaves, and all / any / not over them."""
    roll = rng.random()
    if depth >= 3 or roll < 0.55:
        return leaf(rng)
    if roll < 0.9:
        group = "all" if roll < 0.75 else "any"
        return {group: [condition(rng, depth + 1) for _ in range(rng.choice([1, 2, 3]))]}
    return {"not": condition(rng, depth + 1)}


def rule(rng: random.Random, index: int) -> dict[str, Any]:
    """Draw a rule: a condition (or none), filters, actions, sometimes stop."""
    out: dict[str, Any] = {"name": f"rule {index}", "actions": [{"add_flag": f"$R{index}"}]}
    if rng.random() < 0.95:
        out["match"] = condition(rng)
    if rng.random() < 0.1:
        out["accounts"] = ["sales"]
    if rng.random() < 0.1:
        out["folders"] = ["INBOX"]
    if rng.random() < 0.1:
        out["actions"].append({"forward": {"to": "boss@corp.example"}})
    if rng.random() < 0.04:
        out["stop"] = True
    return out


@functools.cache
def letters() -> list[ParsedLetter]:
    """Give varied letters: generated, the demo's, broken ones and hand-made edge cases."""
    rng = random.Random(7)
    raws = [
        samples.random_letter(rng, index, rng.choice([800, 3_000, 30_000])) for index in range(12)
    ]
    raws += [raw for mailbox in samples.demo_mailboxes().values() for raw in mailbox]
    raws += list(samples.MALFORMED.values())
    parsed = []
    for raw in raws:
        try:
            parsed.append(parse_letter(raw))
        except ParseError:  # a letter too broken to parse never meets the rules
            continue
    parsed.append(
        ParsedLetter(
            from_=(Address("Anna.Petrova@Client-One.Example.", "Anna Petrova"),),
            reply_to=(Address("<support@corp.example>", ""),),
            subject="Re: quote for X-42, order 17",
            text="",
            html="<p>Order  #1234 from \u212aey account</p>",
            attachments=(
                AttachmentInfo(
                    position=0, filename="Quote.PDF", content_type="Application/PDF", size=10
                ),
            ),
            headers={"Subject": "Re: quote for X-42, order 17", "X-Priority": "1"},
        )
    )
    parsed.append(ParsedLetter(headers={"x-priority": ""}))
    return parsed


def ungated(ruleset: RuleSet) -> RuleSet:
    """Give the same compiled rules with gating off: every rule's condition is called."""
    return RuleSet(ruleset.rules, ruleset.accounts, version=ruleset.version, gating=False)


def decide(ruleset: RuleSet, letter: ParsedLetter, account: str, folder: str) -> Decision:
    """Evaluate one letter afresh (a new memo), as the pipeline does."""
    facts = LetterFacts(letter, account=account, folder=folder, size=len(letter.text) * 2 + 500)
    return evaluate(ruleset, facts)


@pytest.mark.parametrize("seed", range(8))
def test_gated_decisions_equal_ungated_ones(seed: int) -> None:
    """On generated rule sets and letters, gating changes no result, miss text, effect or stop."""
    rng = random.Random(seed)
    parsed = letters()
    gated_rules = 0
    hits = 0
    for _ in range(6):
        configs = [RuleConfig.model_validate(rule(rng, index)) for index in range(40)]
        gated = compile_rules(configs, ACCOUNTS, source="t")
        plain = ungated(gated)
        gated_rules += sum(rule.gate is not None for rule in gated.rules)
        for letter in parsed:
            account, folder = rng.choice(PLACES)
            expected = decide(plain, letter, account, folder)
            assert decide(gated, letter, account, folder) == expected
            hits += len(expected.hits)
    assert gated_rules > 0
    assert hits > 0


def test_all_reports_its_first_failing_child_even_when_a_later_one_is_gated() -> None:
    """An ``all`` gated by a later child still names the earlier child that fails first."""
    configs = [
        RuleConfig.model_validate(
            {
                "name": "r",
                "match": {
                    "all": [
                        {"has_attachment": True},
                        {"header": "subject", "contains": "nowhere-to-be-found"},
                    ]
                },
                "actions": [{"add_flag": "x"}],
            }
        )
    ]
    ruleset = compile_rules(configs, ACCOUNTS, source="t")
    decision = decide(ruleset, ParsedLetter(subject="hello"), "sales", "INBOX")
    assert decision.results[0].failed == "match.all[0]: has_attachment = true"


def test_a_gated_out_rule_reports_the_miss_its_condition_gives() -> None:
    """A rule whose gate fails is not called, yet its miss names the failed condition as usual."""
    configs = [
        RuleConfig.model_validate(
            {
                "name": "r",
                "match": {
                    "all": [
                        {"address": "from", "is": "Boss@Corp.Example"},
                        {"body": "text", "contains": "x"},
                    ]
                },
                "actions": [{"add_flag": "x"}],
            }
        )
    ]
    ruleset = compile_rules(configs, ACCOUNTS, source="t")
    assert ruleset.rules[0].gate is not None
    miss = decide(ruleset, ParsedLetter(text="x"), "sales", "INBOX").results[0]
    assert miss.failed == 'match.all[0]: address = "from", is = "Boss@Corp.Example"'
    boss = ParsedLetter(from_=(Address("boss@corp.example"),), text="x")
    assert decide(ruleset, boss, "sales", "INBOX").results[0].matched
