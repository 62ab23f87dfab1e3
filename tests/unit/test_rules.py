"""Sorting rules: letter in, Decision out, and every config mistake reported at once with its path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from maild.core.decision import (
    AccountInfo,
    AddFlag,
    Autoreply,
    Copy,
    Decision,
    Forward,
    LetterFacts,
    MarkLead,
    Move,
    NotLead,
    RemoveFlag,
    SetResponsible,
)
from maild.core.letter import Address, AttachmentInfo, ParsedLetter
from maild.errors import ConfigError
from maild.ingest.parse import parse_letter
from maild.rules.engine import RuleSet, evaluate
from maild.rules.loader import compile_rules, ruleset_version
from maild.rules.models import RuleConfig
from maild.rules.registry import ACTIONS, CONDITIONS, registered_names
from maild.settings import load_config
from maild.testing import samples

ROOT = Path(__file__).parents[2]
SOURCE = "/etc/maild/maild.toml"
ACCOUNTS = {
    "sales": AccountInfo(watched=("INBOX", "Leads/Web"), deleted="Trash"),
    "support": AccountInfo(watched=("INBOX",), deleted="Deleted Items"),
}

PDF = AttachmentInfo(
    position=0, filename="Invoice-42.PDF", content_type="application/pdf", size=30_000
)
LOGO = AttachmentInfo(
    position=1,
    filename="logo.png",
    content_type="image/png",
    size=900,
    content_id="<logo@x>",
    disposition="inline",
)
BASE = ParsedLetter(
    message_id="<m1@client-one.example>",
    from_=(Address("anna.petrova@client-one.example", "Anna Petrova"),),
    to=(Address("sales@corp.example", "Corp Sales"),),
    cc=(Address("Ivan@Stroy-Torg.Example", "Иван Сидоров"),),
    subject="Invoice 42 for March",
    text="Please pay the invoice by Friday.\nThanks, Anna",
    attachments=(PDF,),
    headers={
        "subject": "Invoice 42 for March",
        "X-Priority": "1",
        "received": "from a.example\nfrom b.example",
        "x-encoded": "=?utf-8?b?0KHRh9GR0YI=?= 7",
    },
)


def facts(
    letter: ParsedLetter = BASE,
    *,
    account: str = "sales",
    folder: str = "INBOX",
    size: int = 40_000,
) -> LetterFacts:
    """Wrap a letter with where it was found, as the pipeline will."""
    return LetterFacts(letter, account=account, folder=folder, size=size)


def ruleset(*rules: dict[str, Any]) -> RuleSet:
    """Compile rules given as the dicts TOML would give."""
    return compile_rules(
        [RuleConfig.model_validate(rule) for rule in rules], ACCOUNTS, source=SOURCE
    )


def decide(match: dict[str, Any] | None, letter: LetterFacts | None = None) -> Decision:
    """Evaluate one rule with the given condition and a flag action."""
    rule: dict[str, Any] = {"name": "r", "actions": [{"add_flag": "flagged"}]}
    if match is not None:
        rule["match"] = match
    return evaluate(ruleset(rule), letter or facts())


def replace(**changes: Any) -> ParsedLetter:
    """Give the base letter with some fields changed."""
    fields = {name: getattr(BASE, name) for name in ParsedLetter.__dataclass_fields__}
    fields.update(changes)
    return ParsedLetter(**fields)


# (id, condition, letter, matches?)
CONDITION_CASES: list[tuple[str, dict[str, Any], LetterFacts, bool]] = [
    # header
    ("header-is", {"header": "subject", "is": "invoice 42 for march"}, facts(), True),
    ("header-is-whole-value", {"header": "subject", "is": "invoice"}, facts(), False),
    ("header-contains", {"header": "Subject", "contains": "INVOICE"}, facts(), True),
    (
        "header-contains-any-of",
        {"header": "subject", "contains": ["quote", "march"]},
        facts(),
        True,
    ),
    ("header-matches", {"header": "subject", "matches": r"^invoice \d+"}, facts(), True),
    ("header-matches-miss", {"header": "subject", "matches": r"^\d+"}, facts(), False),
    ("header-exists", {"header": "x-priority", "exists": True}, facts(), True),
    ("header-exists-false", {"header": "list-id", "exists": False}, facts(), True),
    ("header-exists-miss", {"header": "list-id", "exists": True}, facts(), False),
    ("header-name-any-case", {"header": "X-PRIORITY", "is": "1"}, facts(), True),
    ("header-repeated", {"header": "received", "is": "from b.example"}, facts(), True),
    ("header-decoded", {"header": "x-encoded", "contains": "СЧЁТ"}, facts(), True),
    (
        "header-case-sensitive",
        {"header": "subject", "contains": "invoice", "case_sensitive": True},
        facts(),
        False,
    ),
    (
        "header-case-sensitive-hit",
        {"header": "subject", "contains": "Invoice", "case_sensitive": True},
        facts(),
        True,
    ),
    (
        "header-regex-case-sensitive",
        {"header": "subject", "matches": "^invoice", "case_sensitive": True},
        facts(),
        False,
    ),
    ("header-from-rendered", {"header": "from", "contains": "Petrova <anna"}, facts(), True),
    # address
    (
        "address-from-normalised",
        {"address": "from", "is": " Anna.Petrova@Client-One.EXAMPLE "},
        facts(),
        True,
    ),
    ("address-to", {"address": "to", "is": "sales@corp.example"}, facts(), True),
    (
        "address-cc-stored-mixed-case",
        {"address": "cc", "is": "ivan@stroy-torg.example"},
        facts(),
        True,
    ),
    (
        "address-recipient-covers-cc",
        {"address": "recipient", "is": "ivan@stroy-torg.example"},
        facts(),
        True,
    ),
    (
        "address-recipient-not-from",
        {"address": "recipient", "is": "anna.petrova@client-one.example"},
        facts(),
        False,
    ),
    ("address-contains", {"address": "from", "contains": "petrova@"}, facts(), True),
    ("address-matches", {"address": "from", "matches": r"^anna\.[a-z]+@"}, facts(), True),
    ("address-reply-to-absent", {"address": "reply_to", "exists": False}, facts(), True),
    # domain
    ("domain-from", {"domain": "from", "is": "CLIENT-ONE.example"}, facts(), True),
    ("domain-at-prefix", {"domain": "from", "is": "@client-one.example"}, facts(), True),
    (
        "domain-recipient-list",
        {"domain": "recipient", "is": ["x.example", "stroy-torg.example"]},
        facts(),
        True,
    ),
    ("domain-to-miss", {"domain": "to", "is": "client-one.example"}, facts(), False),
    ("domain-matches", {"domain": "from", "matches": r"\.example$"}, facts(), True),
    ("domain-contains", {"domain": "cc", "contains": "torg"}, facts(), True),
    # display name
    ("display-name-contains", {"display_name": "from", "contains": "PETROVA"}, facts(), True),
    ("display-name-is", {"display_name": "cc", "is": "иван сидоров"}, facts(), True),
    ("display-name-miss", {"display_name": "to", "contains": "anna"}, facts(), False),
    # body
    ("body-text-contains", {"body": "text", "contains": "pay the INVOICE"}, facts(), True),
    ("body-text-matches-multiline", {"body": "text", "matches": r"(?m)^thanks"}, facts(), True),
    (
        "body-text-falls-back-to-html",
        {"body": "text", "contains": "pay now"},
        facts(replace(text="", html="<p>Pay <b>now</b></p>")),
        True,
    ),
    ("body-html-exists-miss", {"body": "html", "exists": True}, facts(), False),
    # attachments
    ("attachment-name-matches", {"attachment": "name", "matches": r"\.pdf$"}, facts(), True),
    ("attachment-name-is", {"attachment": "name", "is": "invoice-42.pdf"}, facts(), True),
    ("attachment-type-is", {"attachment": "type", "is": "APPLICATION/PDF"}, facts(), True),
    ("attachment-type-contains-miss", {"attachment": "type", "contains": "image/"}, facts(), False),
    ("has-attachment", {"has_attachment": True}, facts(), True),
    ("has-attachment-false", {"has_attachment": False}, facts(replace(attachments=())), True),
    (
        "inline-logo-is-not-an-attachment",
        {"has_attachment": True},
        facts(replace(attachments=(LOGO,))),
        False,
    ),
    # size, account, folder
    ("size-over", {"size_over": 39_999}, facts(size=40_000), True),
    ("size-over-boundary", {"size_over": 40_000}, facts(size=40_000), False),
    ("size-under", {"size_under": 40_001}, facts(size=40_000), True),
    ("size-under-boundary", {"size_under": 40_000}, facts(size=40_000), False),
    ("account", {"account": "support"}, facts(account="support"), True),
    ("account-list-miss", {"account": ["support"]}, facts(account="sales"), False),
    ("folder", {"folder": "Leads/Web"}, facts(folder="Leads/Web"), True),
    ("folder-miss", {"folder": ["Leads/Web"]}, facts(folder="INBOX"), False),
    # combinations
    (
        "all",
        {"all": [{"header": "subject", "contains": "invoice"}, {"has_attachment": True}]},
        facts(),
        True,
    ),
    (
        "all-miss",
        {"all": [{"header": "subject", "contains": "invoice"}, {"size_over": 10**9}]},
        facts(),
        False,
    ),
    (
        "any",
        {"any": [{"size_over": 10**9}, {"domain": "from", "is": "client-one.example"}]},
        facts(),
        True,
    ),
    ("any-miss", {"any": [{"size_over": 10**9}, {"has_attachment": False}]}, facts(), False),
    ("not", {"not": {"header": "list-id", "exists": True}}, facts(), True),
    ("not-miss", {"not": {"has_attachment": True}}, facts(), False),
    (
        "nested",
        {
            "all": [
                {
                    "any": [
                        {"domain": "from", "is": "nobody.example"},
                        {"address": "to", "contains": "sales@"},
                    ]
                },
                {"not": {"any": [{"size_over": 10**9}, {"header": "x-spam", "exists": True}]}},
            ]
        },
        facts(),
        True,
    ),
]


@pytest.mark.parametrize(
    ("condition", "letter", "expected"),
    [case[1:] for case in CONDITION_CASES],
    ids=[case[0] for case in CONDITION_CASES],
)
def test_condition(condition: dict[str, Any], letter: LetterFacts, expected: bool) -> None:
    """Each condition and operator holds exactly on the letters it describes."""
    decision = decide(condition, letter)
    assert decision.results[0].matched is expected, decision.results[0].failed
    assert decision.implicit_keep is not expected


def test_every_condition_name_has_a_case() -> None:
    """The condition table exercises every registered condition and every operator."""
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            used.update(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for case in CONDITION_CASES:
        walk(case[1])
    names = registered_names()
    assert set(names["condition"]) <= used
    assert set(names["operator"]) <= used


def test_parsed_letter_with_encoded_subject_matches_case_insensitively() -> None:
    """A real parsed letter is matched on its decoded subject and sender, in any letter case."""
    raw = samples.letter(
        sender=("Иван Сидоров", "Ivan@Stroy-Torg.example"),
        to=samples.SALES,
        subject="Счёт на оплату",
        body="Здравствуйте!",
        attachments=[("schet.pdf", "application/pdf", b"%PDF-1.4")],
    )
    letter = facts(parse_letter(raw), size=len(raw))
    match = {
        "all": [
            {"header": "subject", "contains": "СЧЁТ"},
            {"address": "from", "is": "ivan@stroy-torg.example"},
            {"display_name": "from", "contains": "сидоров"},
            {"has_attachment": True},
        ]
    }
    assert decide(match, letter).results[0].matched


def test_miss_names_the_failed_condition() -> None:
    """A miss records the readable path and text of the first condition that failed."""
    match = {"all": [{"header": "subject", "contains": "invoice"}, {"has_attachment": False}]}
    result = decide(match).results[0]
    assert not result.matched
    assert result.failed == "match.all[1]: has_attachment = false"
    assert result.effects == ()


@pytest.mark.parametrize(
    ("match", "failed"),
    [
        (
            {"any": [{"size_over": 10**9}, {"has_attachment": False}]},
            "match.any: none of 2 conditions held",
        ),
        ({"not": {"has_attachment": True}}, "match.not: the inner condition held"),
        (
            {"all": [{"not": {"size_over": 1}}]},
            "match.all[0].not: the inner condition held",
        ),
        ({"header": "subject", "is": "x"}, 'match: header = "subject", is = "x"'),
    ],
)
def test_miss_paths_of_combinations(match: dict[str, Any], failed: str) -> None:
    """`any` and `not` misses name the combination itself, nested paths keep their positions."""
    assert decide(match).results[0].failed == failed


def test_rule_without_match_matches_every_letter() -> None:
    """A rule without `match` applies to every letter of its accounts and folders."""
    assert decide(None).results[0].matched


# (id, action, account, expected effects)
ACTION_CASES: list[tuple[str, dict[str, Any], str, tuple[Any, ...]]] = [
    (
        "forward-default-attach",
        {"forward": {"to": "acc@Example.COM"}},
        "sales",
        (Forward("acc@example.com", "attach"),),
    ),
    (
        "forward-resend",
        {"forward": {"to": "a@b.example", "mode": "resend"}},
        "sales",
        (Forward("a@b.example", "resend"),),
    ),
    (
        "forward-redirect",
        {"forward": {"to": "a@b.example", "mode": "redirect"}},
        "sales",
        (Forward("a@b.example", "redirect"),),
    ),
    ("move", {"move": "Invoices"}, "sales", (Move("Invoices", marks_deleted=False),)),
    ("move-to-deleted-folder", {"move": "Trash"}, "sales", (Move("Trash", marks_deleted=True),)),
    (
        "move-deleted-is-per-account",
        {"move": "Trash"},
        "support",
        (Move("Trash", marks_deleted=False),),
    ),
    (
        "move-other-deleted-folder",
        {"move": "Deleted Items"},
        "support",
        (Move("Deleted Items", marks_deleted=True),),
    ),
    ("copy", {"copy": "Archive/2026"}, "sales", (Copy("Archive/2026"),)),
    ("add-flag-seen", {"add_flag": "seen"}, "sales", (AddFlag("\\Seen"),)),
    ("add-flag-flagged", {"add_flag": "Flagged"}, "sales", (AddFlag("\\Flagged"),)),
    ("add-flag-keyword", {"add_flag": "$Label1"}, "sales", (AddFlag("$Label1"),)),
    ("remove-flag", {"remove_flag": "seen"}, "sales", (RemoveFlag("\\Seen"),)),
    ("set-responsible", {"set_responsible": "j.smith"}, "sales", (SetResponsible("j.smith"),)),
    ("stop", {"stop": True}, "sales", ()),
    ("mark-lead", {"mark_lead": True}, "sales", (MarkLead(),)),
    ("not-lead", {"not_lead": True}, "sales", (NotLead(),)),
    ("autoreply-off", {"autoreply": False}, "sales", (Autoreply(),)),
    (
        "autoreply-text",
        {"autoreply": {"text": "Back on Monday."}},
        "sales",
        (Autoreply(text="Back on Monday."),),
    ),
]


@pytest.mark.parametrize(
    ("action", "account", "effects"),
    [case[1:] for case in ACTION_CASES],
    ids=[case[0] for case in ACTION_CASES],
)
def test_action(action: dict[str, Any], account: str, effects: tuple[Any, ...]) -> None:
    """Each action gives exactly its effects; moving to the account's deleted folder marks deletion."""
    decision = evaluate(ruleset({"name": "r", "actions": [action]}), facts(account=account))
    assert decision.effects == effects
    assert decision.results[0].effects == effects
    assert decision.marks_deleted is any(isinstance(e, Move) and e.marks_deleted for e in effects)


def test_every_action_name_has_a_case() -> None:
    """The action table exercises every registered action."""
    used = {name for case in ACTION_CASES for name in case[1]}
    assert set(registered_names()["action"]) <= used


def test_effect_keys_and_json_are_stable() -> None:
    """Effect keys (for outbox idempotency) and JSON shapes do not depend on anything but the effect."""
    assert Forward("a@b.example").key() == "forward:attach:a@b.example"
    assert Move("Trash", marks_deleted=True).key() == "move:Trash"
    assert Copy("X").key() == "copy:X"
    assert AddFlag("\\Seen").key() == "add_flag:\\Seen"
    assert RemoveFlag("k").key() == "remove_flag:k"
    assert SetResponsible("j").key() == "set_responsible:j"
    assert Move("Trash", marks_deleted=True).as_dict() == {
        "kind": "move",
        "folder": "Trash",
        "marks_deleted": True,
    }


THREE_RULES = (
    {
        "name": "flag invoices",
        "match": {"header": "subject", "contains": "invoice"},
        "actions": [{"add_flag": "flagged"}],
    },
    {
        "name": "accounting",
        "match": {"has_attachment": True},
        "actions": [{"forward": {"to": "acc@corp.example"}}, {"move": "Invoices"}],
    },
    {"name": "never", "match": {"size_over": 10**9}, "actions": [{"copy": "Big"}]},
    {"name": "last", "actions": [{"add_flag": "seen"}]},
)


def test_rules_run_in_order_and_effects_add_up() -> None:
    """Every matching rule contributes its effects in rule order, and every rule is recorded."""
    decision = evaluate(ruleset(*THREE_RULES), facts())
    assert decision.effects == (
        AddFlag("\\Flagged"),
        Forward("acc@corp.example"),
        Move("Invoices"),
        AddFlag("\\Seen"),
    )
    assert [(r.rule, r.matched) for r in decision.results] == [
        ("flag invoices", True),
        ("accounting", True),
        ("never", False),
        ("last", True),
    ]
    assert decision.results[2].failed == "match: size_over = 1000000000"
    assert decision.stopped_by is None
    assert decision.implicit_keep is False


@pytest.mark.parametrize("how", ["rule-key", "action"])
def test_stop_ends_evaluation(how: str) -> None:
    """`stop = true` or a `stop` action ends evaluation after its rule; later rules are not tried."""
    rules = [dict(rule) for rule in THREE_RULES]
    if how == "rule-key":
        rules[1]["stop"] = True
    else:
        rules[1]["actions"] = [*rules[1]["actions"], {"stop": True}]
    decision = evaluate(ruleset(*rules), facts())
    assert decision.stopped_by == "accounting"
    assert [r.rule for r in decision.results] == ["flag invoices", "accounting"]
    assert AddFlag("\\Seen") not in decision.effects


def test_stop_on_a_miss_does_not_stop() -> None:
    """A rule with `stop = true` that does not match lets evaluation go on."""
    rules = [dict(rule) for rule in THREE_RULES]
    rules[2]["stop"] = True
    decision = evaluate(ruleset(*rules), facts())
    assert decision.stopped_by is None
    assert len(decision.results) == 4


def test_no_match_is_an_implicit_keep() -> None:
    """When no rule matches, the Decision has no effects and says the letter is kept."""
    decision = evaluate(ruleset(THREE_RULES[2]), facts())
    assert decision.implicit_keep is True
    assert decision.effects == ()
    assert decision.results[0].matched is False


def test_empty_ruleset_keeps_the_letter() -> None:
    """With no rules at all the Decision is an implicit keep with no results."""
    decision = evaluate(ruleset(), facts())
    assert decision == Decision((), (), None, True, ruleset().version)


def test_accounts_and_folders_filters_are_recorded_misses() -> None:
    """A rule limited to other accounts or folders is recorded as a miss saying why."""
    rules = ruleset(
        {"name": "support only", "accounts": ["support"], "actions": [{"add_flag": "seen"}]},
        {
            "name": "web leads",
            "accounts": ["sales"],
            "folders": ["Leads/Web"],
            "actions": [{"add_flag": "seen"}],
        },
        {"name": "inbox anywhere", "folders": ["INBOX"], "actions": [{"add_flag": "flagged"}]},
    )
    decision = evaluate(rules, facts(account="sales", folder="INBOX"))
    assert [(r.rule, r.matched, r.failed) for r in decision.results] == [
        ("support only", False, 'accounts: not for account "sales"'),
        ("web leads", False, 'folders: not for folder "INBOX"'),
        ("inbox anywhere", True, None),
    ]
    web = evaluate(rules, facts(account="sales", folder="Leads/Web"))
    assert [r.matched for r in web.results] == [False, True, False]


def test_repeated_effects_are_kept_once() -> None:
    """Two rules asking for the same effect give it once, so one outbox key is one action."""
    rules = ruleset(
        {"name": "a", "actions": [{"add_flag": "seen"}, {"move": "X"}]},
        {"name": "b", "actions": [{"add_flag": "seen"}]},
    )
    assert evaluate(rules, facts()).effects == (AddFlag("\\Seen"), Move("X"))


def test_decision_is_json() -> None:
    """The Decision serialises to JSON for the audit trail, with the ruleset version."""
    rules = ruleset(*THREE_RULES)
    data = json.loads(json.dumps(evaluate(rules, facts()).as_dict()))
    assert data["ruleset_version"] == rules.version
    assert data["results"][1]["effects"][0] == {
        "kind": "forward",
        "to": "acc@corp.example",
        "mode": "attach",
    }
    assert data["results"][2]["failed"] == "match: size_over = 1000000000"


def test_version_follows_the_rules() -> None:
    """The ruleset version is stable for equal rules and changes when any rule changes."""
    configs = [RuleConfig.model_validate(rule) for rule in THREE_RULES]
    assert ruleset_version(configs) == ruleset(*THREE_RULES).version
    changed = [*configs[:-1], RuleConfig.model_validate({**THREE_RULES[3], "stop": True})]
    assert ruleset_version(changed) != ruleset_version(configs)
    assert len(ruleset_version(configs)) == 12


def test_letters_do_not_share_derived_values() -> None:
    """Derived views are cached per letter, so one letter's subject never leaks into the next."""
    rules = ruleset(
        {
            "name": "r",
            "match": {"header": "subject", "contains": "invoice"},
            "actions": [{"stop": True}],
        }
    )
    assert evaluate(rules, facts()).results[0].matched
    assert not evaluate(rules, facts(replace(subject="Hello"))).results[0].matched


# ---------------------------------------------------------------- loader errors


def problems_of(*rules: dict[str, Any]) -> list[str]:
    """Compile rules that must fail and give the problem lines."""
    with pytest.raises(ConfigError) as caught:
        ruleset(*rules)
    return caught.value.problems


def test_all_problems_are_reported_at_once_with_rule_name_and_path() -> None:
    """Unknown conditions, bad regexes, unknown accounts and folders, repeated names and bad
    forward addresses in several rules come out together, each with its rule and path."""
    problems = problems_of(
        {
            "name": "invoices",
            "accounts": ["sales", "slaes"],
            "folders": ["Spam"],
            "match": {
                "all": [
                    {"matches": "x", "header": "subject"},
                    {"header": "subject", "matches": "(unclosed"},
                ]
            },
            "actions": [{"forward": {"to": "acc@corp"}}],
        },
        {
            "name": "second",
            "match": {"any": [{"hedaer": "subject", "is": "x"}, {"size_over": "big"}]},
            "actions": [{"mvoe": "X"}, {"forward": {"to": "a@b.example, c@d.example"}}],
        },
        {"name": "Invoices", "actions": [{"forward": {"to": "a b@c.example"}}]},
    )
    prefix = f'{SOURCE}: rules[0] ("invoices")'
    assert f'{prefix}.accounts[1]: unknown account "slaes" (accounts: sales, support)' in problems
    assert (
        f'{prefix}.folders[0]: folder "Spam" is not watched by account sales (watched: INBOX, Leads/Web)'
        in problems
    )
    regex = [line for line in problems if ".match.all[1].matches: bad regex:" in line]
    assert regex and regex[0].startswith(f"{prefix}.match.all[1].matches: bad regex: missing )")
    assert any(
        line.startswith(f'{prefix}.actions[0].forward.to: invalid forward address "acc@corp"')
        for line in problems
    )
    second = f'{SOURCE}: rules[1] ("second")'
    assert any(
        line.startswith(
            f'{second}.match.any[0]: unknown condition "hedaer"; did you mean "header"?'
        )
        for line in problems
    )
    assert (
        f'{second}.match.any[1].size_over: must be a whole number of bytes, not "big"' in problems
    )
    assert any(
        line.startswith(f'{second}.actions[0]: unknown action "mvoe"; did you mean "move"?')
        for line in problems
    )
    assert any(
        line.startswith(f"{second}.actions[1].forward.to: invalid forward address")
        for line in problems
    )
    third = f'{SOURCE}: rules[2] ("Invoices")'
    assert f"{third}.name: the name is already used by rules[0]" in problems
    assert any(
        line.startswith(f"{third}.actions[0].forward.to: invalid forward address")
        for line in problems
    )
    assert len(problems) == 10


@pytest.mark.parametrize(
    ("rule", "line"),
    [
        (
            {"name": "r", "match": {"subject": "x"}, "actions": [{"stop": True}]},
            'match: unknown condition "subject"; write header = "subject"',
        ),
        (
            {
                "name": "r",
                "match": {"header": "subject", "is": "a", "contains": "b"},
                "actions": [{"stop": True}],
            },
            "match: give exactly one operator of is, contains, matches, exists (found: is, contains)",
        ),
        (
            {
                "name": "r",
                "match": {"header": "subject", "contians": "b"},
                "actions": [{"stop": True}],
            },
            'match.contians: unknown key for a "header" condition',
        ),
        (
            {
                "name": "r",
                "match": {"header": "subject", "has_attachment": True},
                "actions": [{"stop": True}],
            },
            "match: one condition per table, found `header`, `has_attachment`",
        ),
        (
            {
                "name": "r",
                "match": {"address": "sender", "is": "a@b.c"},
                "actions": [{"stop": True}],
            },
            'match.address: must be one of "from", "to", "cc", "reply_to", "recipient", not "sender"',
        ),
        (
            {
                "name": "r",
                "match": {"address": "from", "is": "a@b.c", "case_sensitive": True},
                "actions": [{"stop": True}],
            },
            'match.case_sensitive: unknown key for a "address" condition',
        ),
        (
            {"name": "r", "match": {"all": []}, "actions": [{"stop": True}]},
            "match.all: must be a non-empty list of condition tables",
        ),
        (
            {"name": "r", "match": {"folder": "Spam"}, "actions": [{"stop": True}]},
            'match.folder: folder "Spam" is not watched by account sales, support',
        ),
        (
            {"name": "r", "match": {"account": ["sales", "nope"]}, "actions": [{"stop": True}]},
            'match.account[1]: unknown account "nope"',
        ),
        (
            {
                "name": "r",
                "match": {"header": "subject", "matches": ["ok", "(bad"]},
                "actions": [{"stop": True}],
            },
            "match.matches[1]: bad regex: missing )",
        ),
        ({"name": "r"}, "actions: a rule needs at least one action, or stop = true"),
        (
            {"name": "r", "actions": [{"forward": {"to": "a@b.example", "mode": "bounce"}}]},
            'actions[0].forward.mode: must be one of "attach", "resend", "redirect", not "bounce"',
        ),
        (
            {"name": "r", "actions": [{"forward": {"to": "a@b\r\n.example"}}]},
            "actions[0].forward.to: invalid forward address",
        ),
        ({"name": "r", "actions": [{"forward": {}}]}, "actions[0].forward.to: is required"),
        (
            {"name": "r", "actions": [{"add_flag": "deleted"}]},
            "actions[0].add_flag: to delete a letter, move it",
        ),
        (
            {"name": "r", "actions": [{"add_flag": "two words"}]},
            'actions[0].add_flag: must be "seen"',
        ),
        (
            {"name": "r", "actions": [{"move": "", "copy": "X"}]},
            "actions[0]: an action is a table with one key",
        ),
        ({"name": "r", "actions": [{"stop": False}]}, "actions[0].stop: must be true"),
        (
            {"name": "r", "actions": [{"set_responsible": "j smith"}]},
            "actions[0].set_responsible: must be a user login",
        ),
    ],
)
def test_loader_problem(rule: dict[str, Any], line: str) -> None:
    """Each kind of mistake gives one line naming the rule, the path and what is wrong."""
    problems = problems_of(rule)
    assert any(p.startswith(f'{SOURCE}: rules[0] ("r").{line}') for p in problems), problems


@pytest.mark.parametrize("address", ["a@b.example", "first.last+tag@mail.corp.example"])
def test_valid_forward_addresses_pass(address: str) -> None:
    """Ordinary addresses pass the strict forward-address check."""
    assert ruleset({"name": "r", "actions": [{"forward": {"to": address}}]})


def test_rule_shape_errors_come_from_the_model() -> None:
    """Unknown rule keys and wrong types are caught by the rule model itself."""
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        RuleConfig.model_validate({"name": "r", "actoins": []})
    with pytest.raises(ValueError, match="at least 1 item"):
        RuleConfig.model_validate({"name": "r", "accounts": []})


CONFIG = """
[[accounts]]
name = "sales"
address = "sales@corp.example"
imap = {{ host = "imap.corp.example", username = "sales", password_env = "X" }}
folders = {{ watch = ["INBOX"], deleted = "Trash" }}

{rules}
"""


def test_check_config_reports_rule_problems_as_file_lines(tmp_path: Path) -> None:
    """load_config compiles the rules and reports their problems as FILE: path: message lines."""
    path = tmp_path / "maild.toml"
    path.write_text(
        CONFIG.format(
            rules='[[rules]]\nname = "bad"\nmatch = { header = "subject", matches = "(" }\n'
            'actions = [ { move = "Trash" } ]\n'
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_secrets=False)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(
        f'{path}: rules[0] ("bad").match.matches: bad regex:'
    )


def test_config_with_valid_rules_loads(tmp_path: Path) -> None:
    """A config with valid rules loads, and the rules compile against its accounts."""
    path = tmp_path / "maild.toml"
    path.write_text(
        CONFIG.format(
            rules='[[rules]]\nname = "trash spam"\nmatch = { header = "x-spam-flag", is = "yes" }\n'
            'actions = [ { move = "Trash" } ]\nstop = true\n'
        ),
        encoding="utf-8",
    )
    config = load_config(path, check_secrets=False)
    assert config.rules[0].name == "trash spam"


# ---------------------------------------------------------------- registry and docs


def test_registry_names_are_unique() -> None:
    """Registering a name twice is refused, so each name means one thing."""
    with pytest.raises(ValueError, match="already registered"):
        CONDITIONS.register("header", summary="again")(lambda node, path, ctx: None)
    with pytest.raises(ValueError, match="already registered"):
        ACTIONS.register("move", summary="again")(lambda value, path, ctx: None)


def test_every_condition_operator_and_action_is_documented() -> None:
    """Every registered condition, operator and action name appears backticked in docs/config.md."""
    doc = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    rules_part = doc[doc.index("## Rules") :]
    names = registered_names()
    assert names["condition"] and names["action"]
    missing = [
        f"{kind} {name}"
        for kind, listed in names.items()
        for name in listed
        if f"`{name}`" not in rules_part
    ]
    assert not missing, f"missing from the Rules section of docs/config.md: {missing}"


# ---------------------------------------------------------------- regex literal prefilter


@pytest.mark.parametrize(
    ("pattern", "flags", "expected"),
    [
        (r"order\s+#?35\d{4}", re.IGNORECASE, (("order", "35"), True)),
        (r"^(re|fwd):\s*Quote\b", 0, (("Quote", ":"), False)),
        (r"Invoice\.(xlsx?|csv)$", 0, (("Invoice.",), False)),
        (r"a|bcd", 0, ((), False)),
        (r"(?i)HELLO", 0, (("hello",), True)),
        (r"ab", 0, (("ab",), False)),
        (r"x", 0, (("x",), False)),
        (r"order\s+#?5\d{4}", re.IGNORECASE, (("order", "5"), True)),
    ],
)
def test_required_literals(
    pattern: str, flags: int, expected: tuple[tuple[str, ...], bool]
) -> None:
    """Only literal runs of the top-level sequence are required; groups and branches are not."""
    from maild.rules.conditions import required_literals

    assert required_literals(re.compile(pattern, flags)) == expected


@pytest.mark.parametrize(
    ("body", "pattern", "hit"),
    [
        ("Order  #351234 please", r"order\s+#?35\d{4}", True),
        ("order 35 only", r"order\s+#?35\d{4}", False),
        ("\u017ftatus: paid", r"status:\s+paid", True),  # long s matches s under IGNORECASE
        ("\u0130nvoice attached", r"invoice\s+attached", True),  # dotted capital I matches i
        ("\u0131nvoice attached", r"invoice\s+attached", True),  # dotless i matches i
    ],
)
def test_regex_prefilter_keeps_ignorecase_semantics(body: str, pattern: str, hit: bool) -> None:
    """The literal prefilter never hides a match re.IGNORECASE would find."""
    assert bool(re.search(pattern, body, re.IGNORECASE)) is hit
    ruleset = compile_rules(
        [
            RuleConfig(
                name="r", match={"body": "text", "matches": pattern}, actions=[{"add_flag": "seen"}]
            )
        ],
        {"sales": AccountInfo(("INBOX",), "Trash")},
        source="t",
    )
    facts = LetterFacts(ParsedLetter(text=body), account="sales", folder="INBOX", size=10)
    assert bool(evaluate(ruleset, facts).hits) is hit
