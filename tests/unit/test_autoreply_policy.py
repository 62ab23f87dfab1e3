"""The autoresponder's pure policy and composition: each check alone, the period, the reply's headers."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta

import pytest

from maild.autoreply.compose import compose_reply
from maild.autoreply.policy import (
    NO_SUBJECT,
    Period,
    ReplyPlan,
    Suppressed,
    period_state,
    plan_reply,
    reply_subject,
)
from maild.core.decision import Autoreply
from maild.ingest.parse import parse_letter

START = datetime(2026, 12, 30, 0, 0, tzinfo=UTC)
END = datetime(2027, 1, 8, 23, 59, 59, tzinfo=UTC)
INSIDE = datetime(2027, 1, 2, 12, 0, tzinfo=UTC)
PERIOD = Period(enabled=True, start=START, end=END, text="We are on holiday.")
ACCOUNT = frozenset({"support@corp.example", "help@corp.example"})

BASE_HEADERS = {
    "Return-Path": "<Ivan@Client.example>",
    "From": "Ivan Petrov <Ivan@Client.example>",
    "To": "Support <support@corp.example>",
    "Subject": "Where is my order?",
    "Message-ID": "<q1@client.example>",
    "References": "<q0@client.example>",
    "Date": "Fri, 01 Jan 2027 10:00:00 +0000",
}


def raw(changes: dict[str, str | None] | None = None, *, body: str = "Hello") -> bytes:
    """Build the base letter (which passes every check) with headers changed or removed."""
    headers = dict(BASE_HEADERS)
    for name, value in (changes or {}).items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()


def verdict(
    changes: dict[str, str | None] | None = None,
    *,
    arrival: datetime | None = INSIDE,
    period: Period = PERIOD,
    **kwargs: object,
) -> ReplyPlan | Suppressed:
    """Run the policy on the base letter with changes."""
    return plan_reply(
        parse_letter(raw(changes)),
        arrival=arrival,
        period=period,
        addresses=ACCOUNT,
        **kwargs,  # type: ignore[arg-type]
    )


def test_base_letter_is_answered() -> None:
    """A letter passing every check gets a reply to its envelope sender, keyed lower-cased."""
    plan = verdict()
    assert isinstance(plan, ReplyPlan)
    assert (plan.to, plan.key, plan.to_name) == (
        "Ivan@Client.example",
        "ivan@client.example",
        "Ivan Petrov",
    )
    assert plan.subject == "Auto: Where is my order?"
    assert plan.in_reply_to == "<q1@client.example>"
    assert plan.references == ("<q0@client.example>",)
    assert plan.arrival == INSIDE and plan.text == "We are on holiday."


CHECKS: list[tuple[str, dict[str, str | None], str]] = [
    ("null-return-path", {"Return-Path": "<>"}, "null envelope sender"),
    ("no-return-path", {"Return-Path": None}, "no Return-Path"),
    ("own-address", {"Return-Path": "<SUPPORT@corp.example>"}, "the account itself"),
    ("own-alias", {"Return-Path": "<help@corp.example>"}, "the account itself"),
    ("list-id", {"List-Id": "<news.client.example>"}, "mailing list (List-Id)"),
    ("list-help", {"List-Help": "<mailto:help@x.example>"}, "mailing list (List-Help)"),
    ("list-subscribe", {"List-Subscribe": "<mailto:s@x.example>"}, "(List-Subscribe)"),
    ("list-unsubscribe", {"List-Unsubscribe": "<mailto:u@x.example>"}, "(List-Unsubscribe)"),
    ("list-post", {"List-Post": "<mailto:p@x.example>"}, "(List-Post)"),
    ("list-owner", {"List-Owner": "<mailto:o@x.example>"}, "(List-Owner)"),
    ("list-archive", {"List-Archive": "<https://x.example/a>"}, "(List-Archive)"),
    ("auto-replied", {"Auto-Submitted": "auto-replied"}, "Auto-Submitted: auto-replied"),
    ("auto-generated", {"Auto-Submitted": "auto-generated"}, "Auto-Submitted: auto-generated"),
    ("precedence-bulk", {"Precedence": "bulk"}, "Precedence: bulk"),
    ("precedence-junk", {"Precedence": "junk"}, "Precedence: junk"),
    ("precedence-list", {"Precedence": "list"}, "Precedence: list"),
    ("suppress-all", {"X-Auto-Response-Suppress": "All"}, "X-Auto-Response-Suppress"),
    ("suppress-oof", {"X-Auto-Response-Suppress": "DR, OOF"}, "X-Auto-Response-Suppress"),
    ("mailer-daemon", {"Return-Path": "<MAILER-DAEMON@mx.example>"}, "system address"),
    ("listserv", {"Return-Path": "<listserv@x.example>"}, "system address"),
    ("majordomo", {"Return-Path": "<majordomo@x.example>"}, "system address"),
    ("owner-", {"Return-Path": "<owner-news@x.example>"}, "system address"),
    ("-request", {"Return-Path": "<news-request@x.example>"}, "system address"),
    ("bcc-only", {"To": "someone@else.example"}, "not in To, Cc or Bcc"),
    ("noreply", {"Return-Path": "<noreply@shop.example>"}, "no-reply address"),
    ("no-reply", {"Return-Path": "<no-reply@shop.example>"}, "no-reply address"),
    ("do-not-reply", {"Return-Path": "<do-not-reply@shop.example>"}, "no-reply address"),
    ("x-autoreply", {"X-Autoreply": "yes"}, "(X-Autoreply)"),
    ("x-autorespond", {"X-Autorespond": "yes"}, "(X-Autorespond)"),
    ("x-autoresponder", {"X-Autoresponder": "yes"}, "(X-Autoresponder)"),
    (
        "report",
        {"Content-Type": "multipart/report; report-type=delivery-status"},
        "multipart/report",
    ),
    ("loop-marker", {"X-Maild-Loop": "sales@corp.example"}, "loop marker"),
]


@pytest.mark.parametrize(("changes", "reason"), [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_each_check_alone_suppresses(changes: dict[str, str | None], reason: str) -> None:
    """A letter failing only one check gets no reply, and the reason names that check."""
    result = verdict(changes)
    assert isinstance(result, Suppressed), result
    assert reason in result.reason


NOT_SUPPRESSING: list[tuple[str, dict[str, str | None]]] = [
    ("auto-submitted-no", {"Auto-Submitted": "no"}),
    ("suppress-dr-rn-nrn", {"X-Auto-Response-Suppress": "DR, RN, NRN"}),
    ("postmaster", {"Return-Path": "<postmaster@client.example>"}),
    ("in-cc", {"To": "a@b.example", "Cc": "support@corp.example"}),
    ("in-resent-to", {"To": "a@b.example", "Resent-To": "help@corp.example"}),
    ("precedence-first-class", {"Precedence": "first-class"}),
]


@pytest.mark.parametrize(
    "changes", [c[1] for c in NOT_SUPPRESSING], ids=[c[0] for c in NOT_SUPPRESSING]
)
def test_near_misses_are_answered(changes: dict[str, str | None]) -> None:
    """Values the checks must not mistake for robots: Auto-Submitted: no, DR/RN/NRN, postmaster, Cc."""
    assert isinstance(verdict(changes), ReplyPlan)


def test_reply_to_is_never_the_recipient() -> None:
    """The reply goes to the envelope sender, whatever Reply-To says."""
    plan = verdict({"Reply-To": "other@elsewhere.example"})
    assert isinstance(plan, ReplyPlan) and plan.to == "Ivan@Client.example"


@pytest.mark.parametrize(
    ("arrival", "answered"),
    [
        (START - timedelta(seconds=1), False),
        (START, True),
        (END, True),
        (END + timedelta(seconds=1), False),
    ],
    ids=["before-start", "at-start", "at-end", "after-end"],
)
def test_period_ends_are_inclusive(arrival: datetime, answered: bool) -> None:
    """The arrival time decides: [start, end] with both ends included."""
    result = verdict(arrival=arrival)
    assert isinstance(result, ReplyPlan) is answered
    if not answered:
        assert isinstance(result, Suppressed) and "outside the period" in result.reason


def test_disabled_and_no_arrival_time() -> None:
    """A disabled auto-reply answers nothing; a letter without INTERNALDATE is not guessed at."""
    off = Period(enabled=False, start=START, end=END, text="x")
    assert verdict(period=off) == Suppressed("auto-reply is disabled")
    result = verdict(arrival=None)
    assert isinstance(result, Suppressed) and "no arrival time" in result.reason


def test_switched_off_by_hand_from_its_time() -> None:
    """Switched off by hand: letters that arrived before still get a reply, later ones do not."""
    off_at = INSIDE - timedelta(hours=1)
    result = verdict(switched_off_at=off_at)
    assert isinstance(result, Suppressed) and "switched off by hand" in result.reason
    assert isinstance(verdict(switched_off_at=INSIDE + timedelta(hours=1)), ReplyPlan)


def test_rule_override_off_and_text() -> None:
    """A rule's autoreply = false suppresses; autoreply = { text } replaces the text."""
    result = verdict(override=(Autoreply(), "partners"))
    assert result == Suppressed('rule "partners" says no auto-reply')
    plan = verdict(override=(Autoreply(text="Dear partner"), "partners"))
    assert (
        isinstance(plan, ReplyPlan) and plan.text == "Dear partner" and plan.text_rule == "partners"
    )


def test_subjects() -> None:
    """The configured subject wins; else Auto: and the original, shortened; else a fixed one."""
    assert reply_subject("Hi", "Out of office") == "Out of office"
    assert reply_subject("") == NO_SUBJECT
    long = reply_subject("x" * 500)
    assert long.startswith("Auto: x") and long.endswith("…") and len(long) == 206


def test_display_name_only_for_the_same_address() -> None:
    """To: takes From's name only when From shows the envelope sender's address."""
    plan = verdict({"From": "Someone Else <other@client.example>"})
    assert isinstance(plan, ReplyPlan) and plan.to_name == ""
    plan = verdict(
        {
            "From": "x <other@client.example>",
            "Sender": "=?utf-8?b?0JjQstCw0L0=?= <ivan@client.example>",
        }
    )
    assert isinstance(plan, ReplyPlan) and plan.to_name == "Иван"


def test_period_state() -> None:
    """The state a period is in at a time, as /healthz and `autoreply status` show it."""
    assert period_state(PERIOD, START - timedelta(seconds=1)) == "scheduled"
    assert period_state(PERIOD, START) == "on"
    assert period_state(PERIOD, END + timedelta(seconds=1)) == "ended"
    assert period_state(PERIOD, INSIDE, INSIDE) == "off by hand"
    assert period_state(Period(False, None, None, ""), INSIDE) == "disabled"


def test_composed_reply_headers() -> None:
    """The reply: null sender, one recipient, Auto-Submitted, threading, RFC 2047 subject, short lines."""
    plan = verdict({"Subject": "Где мой заказ? " + "очень " * 80})
    assert isinstance(plan, ReplyPlan)
    payload = {
        "to": plan.to,
        "to_name": plan.to_name,
        "subject": plan.subject,
        "text": "Мы в отпуске.",
        "in_reply_to": plan.in_reply_to,
        "references": list(plan.references),
        "null_sender": True,
    }
    reply = compose_reply(
        payload, account_address="support@corp.example", account_name="Corp Support"
    )
    assert reply.sender == "" and reply.recipients == ("Ivan@Client.example",)
    assert all(len(line) <= 998 for line in reply.raw.split(b"\r\n"))
    assert reply.raw.isascii() or b"Subject: Auto: =?utf-8?" in reply.raw
    msg = email.message_from_bytes(reply.raw, policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<q1@client.example>"
    assert msg["References"] == "<q0@client.example> <q1@client.example>"
    assert str(msg["Subject"]).startswith("Auto: Где мой заказ?")
    assert str(msg["To"]) == "Ivan Petrov <Ivan@Client.example>"
    assert msg.get_content().strip() == "Мы в отпуске."
    with_sender = compose_reply(
        payload | {"null_sender": False},
        account_address="support@corp.example",
        account_name="Corp Support",
    )
    assert with_sender.sender == "support@corp.example"


@pytest.mark.parametrize(
    "return_path",
    [
        "<a@client.example>, <b@client.example>",
        "a@client.example b@client.example",
        "<a b@client.example>",
        "garbage@nowhere",
        "=?utf-8?q?a=0D=0ABcc:_x@evil.example?= <a@client.example>",
    ],
    ids=["two-addresses", "two-bare", "space", "no-dot", "encoded-crlf"],
)
def test_return_path_must_be_one_plain_address(return_path: str) -> None:
    """A Return-Path with several addresses or garbage never becomes a recipient."""
    result = verdict({"Return-Path": return_path})
    assert isinstance(result, Suppressed)
    assert "Return-Path is not one plain address" in result.reason


def test_reply_headers_carry_no_injected_line() -> None:
    """Line breaks in the subject, name and threading ids of a row never add a header."""
    payload = {
        "to": "ivan@client.example",
        "to_name": "Ivan\r\nBcc: evil@x.example",
        "subject": "Auto: hi\r\nBcc: evil@x.example",
        "text": "Away.",
        "in_reply_to": "<q1@client.example>\r\nBcc: evil@x.example",
        "references": ["<q0@client.example>\nBcc: evil@x.example", "no id here"],
    }
    reply = compose_reply(payload, account_address="support@corp.example", account_name="S\nX: y")
    msg = email.message_from_bytes(reply.raw, policy=email.policy.default)
    assert msg["Bcc"] is None and msg["X"] is None
    assert b"\nBcc:" not in reply.raw and reply.recipients == ("ivan@client.example",)
    assert msg["In-Reply-To"] == "<q1@client.example>"
    assert msg["References"] == "<q0@client.example> <q1@client.example>"


@pytest.mark.parametrize(
    "to", ["a@x.example\r\nBcc: e@x.example", "a@x.example, b@x.example", "Ivan <a@x.example>"]
)
def test_reply_to_an_unsafe_recipient_is_refused(to: str) -> None:
    """A row whose recipient is not one plain address is refused before anything is composed."""
    with pytest.raises(ValueError, match="not one plain address"):
        compose_reply({"to": to, "text": "x"}, account_address="s@corp.example", account_name="")
