"""`maild rules test`: every rule hit or missed with the failed condition, the effects, JSON, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from maild.cli import main
from maild.core.decision import LetterFacts
from maild.dryrun.replay import pages
from maild.dryrun.report import printable, shorten
from maild.dryrun.trial import parse_when
from maild.ingest.parse import parse_letter
from maild.rules.engine import evaluate
from maild.settings import load_config
from maild.testing.samples import MALFORMED, SALES, letter
from tests.dryrun_config import (
    DAMAGED,
    QUOTE,
    QUOTE_REPLY,
    RULES,
    SPAM,
    TRACKING,
    WEB_FORM,
    write_config,
)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write the shared config; its password variable stays unset, since no secret is needed."""
    monkeypatch.delenv("MAILD_T_UNSET", raising=False)
    return write_config(tmp_path)


def rules_test(config: Path, raw: bytes, *args: str) -> Result:
    """Run `maild rules test` on a letter given on stdin."""
    return CliRunner().invoke(main, ["rules", "test", "-c", str(config), *args, "-"], input=raw)


def test_hit_miss_stop_and_not_tried(config: Path) -> None:
    """A miss names the failed condition; the stopping hit lists its effects; later rules are not tried."""
    result = rules_test(config, QUOTE)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("letter <") and lines[0].endswith(
        '"Quote for 200 units of model X-42"'
    )
    assert lines[1].startswith(f"  in account sales, folder INBOX, {len(QUOTE)} bytes; ruleset ")
    assert lines[2:] == [
        "rules:",
        '  miss  spam: match: header = "subject", contains = "viagra"',
        "  hit   quotes (stop) -> forward to accounting@corp.example (attach); add flag \\Seen",
        '  --    web leads: not tried, "quotes" stopped evaluation',
        '  --    with attachment: not tried, "quotes" stopped evaluation',
        "effects:",
        "  forward to accounting@corp.example (attach)",
        "  add flag \\Seen",
        "stopped by: quotes",
        "lead: none: the account counts no letters as leads",
        "responsible: nobody: no rule sets one, and no personal sender name of [[users]] is addressed",
    ]


def test_failed_condition_inside_all_and_the_rule_filters(config: Path) -> None:
    """The miss of an `all` names the child that failed; a folder filter names the folder."""
    result = rules_test(config, QUOTE_REPLY)
    assert result.exit_code == 0, result.output
    assert '  miss  quotes: match.all[1]: domain = "from", is = "client-one.example"' in (
        result.stdout.splitlines()
    )
    assert '  miss  web leads: folders: not for folder "INBOX"' in result.stdout
    assert "  hit   with attachment -> copy to Attachments; add flag \\Seen" in result.stdout
    assert "stopped by" not in result.stdout
    assert "implicit keep" not in result.stdout


def test_account_and_folder_options(config: Path) -> None:
    """--account and --folder place the letter: an account filter misses, a folder rule hits."""
    web = rules_test(config, WEB_FORM, "--folder", "Leads/Web")
    assert web.exit_code == 0, web.output
    assert "folder Leads/Web" in web.stdout
    assert "  hit   web leads -> set responsible j.smith" in web.stdout
    support = rules_test(config, WEB_FORM, "--account", "support")
    assert support.exit_code == 0, support.output
    assert '  miss  web leads: accounts: not for account "support"' in support.stdout


def test_move_to_the_deleted_folder_marks_deleted(config: Path) -> None:
    """A move into the account's deleted folder says it marks the letter deleted."""
    result = rules_test(config, SPAM)
    assert "  hit   spam -> move to Trash (marks it deleted)" in result.stdout
    assert "  move to Trash (marks it deleted)" in result.stdout


def test_implicit_keep(config: Path) -> None:
    """When nothing matches, the output says so and lists no effects."""
    result = rules_test(config, TRACKING, "--account", "support")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-4:-2] == [
        "effects: none",
        "implicit keep: no rule matched, the letter stays where it is",
    ]


def test_no_rules_is_an_implicit_keep(tmp_path: Path) -> None:
    """A config without rules still tries the letter: implicit keep."""
    result = rules_test(write_config(tmp_path, rules=""), QUOTE)
    assert result.exit_code == 0, result.output
    assert "rules: none configured" in result.stdout
    assert result.stdout.splitlines()[-3].startswith("implicit keep")


def test_json_is_the_decision_with_the_place(config: Path) -> None:
    """--json prints one document: Decision.as_dict() plus account, folder and message_id."""
    result = rules_test(config, DAMAGED, "--account", "support", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    parsed = parse_letter(DAMAGED)
    ruleset = load_config(config, check_secrets=False).ruleset
    decision = evaluate(
        ruleset, LetterFacts(parsed, account="support", folder="INBOX", size=len(DAMAGED))
    )
    assert document == {
        "account": "support",
        "folder": "INBOX",
        "size": len(DAMAGED),
        "message_id": parsed.message_id,
        "subject": "Delivery damaged",
        **decision.as_dict(),
        "lead": None,
        "responsible": None,
    }
    assert document["effects"] == [
        {"kind": "copy", "folder": "Attachments"},
        {"kind": "add_flag", "flag": "\\Seen"},
    ]
    assert [item["matched"] for item in document["results"]] == [False, False, False, True]


def test_letter_from_a_file(config: Path, tmp_path: Path) -> None:
    """A file path works like stdin."""
    path = tmp_path / "quote.eml"
    path.write_bytes(QUOTE)
    result = CliRunner().invoke(main, ["rules", "test", "-c", str(config), str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stopped_by"] == "quotes"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "slaes"], 'unknown account "slaes" (accounts: sales, support)'),
        (
            ["--folder", "Spam"],
            'folder "Spam" is not watched by account sales (watched: INBOX, Leads/Web)',
        ),
        (
            ["--account", "support", "--folder", "Leads/Web"],
            'folder "Leads/Web" is not watched by account support (watched: INBOX)',
        ),
    ],
)
def test_unknown_account_or_folder(config: Path, args: list[str], message: str) -> None:
    """An account or folder the config does not know is refused, naming the known ones."""
    result = rules_test(config, QUOTE, *args)
    assert result.exit_code == 2
    assert result.stderr == f"maild: error: {message}\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(MALFORMED["nested too deep"], "nest"), (b"", "the letter is empty")],
)
def test_unparsable_letter(config: Path, raw: bytes, reason: str) -> None:
    """A letter that cannot be parsed is a one-line error and exit 1."""
    result = rules_test(config, raw)
    assert result.exit_code == 1
    assert result.stderr.startswith("maild: error: <stdin>: ")
    assert reason in result.stderr
    assert result.stdout == ""


def test_config_problems_exit_2(tmp_path: Path) -> None:
    """A wrong rule is reported like `check-config` does, exit 2."""
    bad = write_config(tmp_path, rules='[[rules]]\nname = "x"\nactions = [ { mvoe = "A" } ]\n')
    result = rules_test(bad, QUOTE)
    assert result.exit_code == 2
    assert f'{bad}: rules[0] ("x").actions[0]: unknown action "mvoe"' in result.stderr


def test_letter_text_cannot_drive_the_terminal(config: Path) -> None:
    """Control characters from a letter are printed escaped."""
    raw = letter(sender=("A", "a@b.example"), to="sales@corp.example", subject="x", body="y")
    raw = raw.replace(b"Subject: x", b"Subject: \x1b[2Jred\x07")
    result = rules_test(config, raw)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert '"\\x1b[2Jred\\x07"' in result.stdout


def test_printable_and_shorten() -> None:
    """Escapes keep ordinary text, Cyrillic included, and cut long text with an ellipsis."""
    assert printable("Счёт на оплату") == "Счёт на оплату"
    assert printable("a\u202eb\tc") == "a\\u202eb\\tc"
    assert shorten("x" * 100, 10) == "x" * 9 + "…"


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("2026-11-01", False, datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01", True, datetime(2026, 11, 2, tzinfo=UTC)),
        ("2026-11-01T09:30", False, datetime(2026, 11, 1, 9, 30, tzinfo=UTC)),
        ("2026-11-01 09:30:00+02:00", True, datetime(2026, 11, 1, 7, 30, tzinfo=UTC)),
        ("2026-11-01T09:30:00Z", False, datetime(2026, 11, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, end: bool, expected: datetime) -> None:
    """Dates and datetimes read as UTC unless they name a zone; a date as end bound covers its day."""
    moment = parse_when(text, end=end)
    assert moment == expected
    assert moment.tzinfo is UTC


def test_parse_when_refuses_garbage() -> None:
    """A value that is not ISO gives an example of what is."""
    with pytest.raises(ValueError, match=r"e\.g\. 2026-11-01"):
        parse_when("yesterday")


def test_replay_pages_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored letters are read in pages bounded by count and bytes; a big letter goes alone."""
    monkeypatch.setattr("maild.dryrun.replay.PAGE_LETTERS", 3)
    monkeypatch.setattr("maild.dryrun.replay.PAGE_BYTES", 100)
    rows = [(1, 10), (2, 10), (3, 10), (4, 10), (5, 500), (6, 60), (7, 60)]
    assert list(pages(rows)) == [[1, 2, 3], [4], [5], [6], [7]]
    assert list(pages([])) == []


LEADS = """
[[scenarios]]
name = "web"
leads_from = { sales = ["Leads/Web"] }

[[users]]
login = "anna"
sender_names = { sales = "Anna Petrova" }
"""


@pytest.fixture
def leads_config(tmp_path: Path) -> Path:
    """The shared config with sales' Leads/Web a lead source, a scenario showing it, and Anna."""
    return with_leads(write_config(tmp_path, rules=RULES + LEADS))


def with_leads(path: Path) -> Path:
    """Make sales' Leads/Web folder a lead source in a written config."""
    text = path.read_text(encoding="utf-8").replace(
        'folders = { watch = ["INBOX", "Leads/Web"] }',
        'folders = { watch = ["INBOX", "Leads/Web"] }\n'
        'leads = { source = "selected", folders = ["Leads/Web"] }',
    )
    path.write_text(text, encoding="utf-8")
    return path


def test_lead_and_responsible_by_rule(leads_config: Path) -> None:
    """A letter in a lead-source folder opens a lead the scenario shows; a rule names its owner."""
    result = rules_test(leads_config, WEB_FORM, "--folder", "Leads/Web")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-3:] == [
        "lead: opens one: folder Leads/Web is a lead source",
        "  shown in scenarios: web",
        "responsible: j.smith (rule web leads)",
    ]
    document = json.loads(
        rules_test(leads_config, WEB_FORM, "--folder", "Leads/Web", "--json").stdout
    )
    assert document["lead"] == {
        "opens": True,
        "reason": "folder Leads/Web is a lead source",
        "scenarios": ["web"],
        "may_join": [],
    }
    assert document["responsible"] == {"login": "j.smith", "reason": "rule web leads"}


def to_anna(subject: str, *, in_reply_to: str | None = None) -> bytes:
    """A client's letter to sales@ addressed by Anna Petrova's personal sender name."""
    return letter(
        sender=("Client", "client@client.example"),
        to=SALES,
        to_name="Anna Petrova",
        subject=subject,
        body="Thanks!",
        in_reply_to=in_reply_to,
    )


def test_a_reply_to_a_personal_name_outside_the_lead_folders(leads_config: Path) -> None:
    """A reply addressed to Anna's sender name names her; in INBOX it opens no lead, and what it
    cites is listed as what would join a stored lead instead."""
    raw = to_anna("Re: [#12] delivery \x1b[31m", in_reply_to="<offer-1@corp.example>")
    result = rules_test(leads_config, raw)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-3:] == [
        "lead: none: folder INBOX is not a lead source",
        "  joins the lead of a stored letter instead, if one matches: "
        "In-Reply-To <offer-1@corp.example>; [#12] in the subject",
        'responsible: anna (personal sender name "Anna Petrova" in To)',
    ]


def test_two_users_with_one_name_choose_nobody(tmp_path: Path) -> None:
    """When two users of [[users]] have the addressed name, nobody is chosen, and both are named."""
    users = LEADS + '\n[[users]]\nlogin = "anya"\nsender_names = { sales = "anna  petrova" }\n'
    raw = to_anna("Question")
    result = rules_test(with_leads(write_config(tmp_path, rules=RULES + users)), raw)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        'responsible: nobody: personal sender name "Anna Petrova" in To is ambiguous: anna, anya'
    )


def test_a_replay_counts_the_leads_its_letters_would_open(config: Path) -> None:
    """The replay's summary counts the letters whose lead verdict opens a lead."""
    from maild.dryrun.outlook import LeadView, Outlook
    from maild.dryrun.replay import Replayed, ReplaySummary

    parsed = parse_letter(WEB_FORM)
    ruleset = load_config(config, check_secrets=False).ruleset
    decision = evaluate(ruleset, LetterFacts(parsed, account="sales", folder="INBOX", size=1))
    summary = ReplaySummary.for_rules(ruleset)
    now = datetime.now(UTC)
    for opens in (True, False, True):
        view = Outlook(LeadView(opens, "why"), None)
        summary.add(Replayed(1, "sales", "INBOX", "stored", 1, now, parsed, decision, None, view))
    summary.add(Replayed(2, "gone", "INBOX", "stored", 1, now, parsed, decision))
    assert (summary.tried, summary.leads_opened) == (4, 2)
