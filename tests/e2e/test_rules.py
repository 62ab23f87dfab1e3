"""Rules applied by the whole daemon: real Dovecot, a real SMTP sink, SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

from sqlalchemy import select

from maild.db.engine import create_engine, session_factory
from maild.db.tables import Letter, OutboxItem, RuleHit
from maild.runtime import Daemon
from maild.settings import Config
from maild.testing.dovecot import DovecotServer
from maild.testing.samples import SALES, letter
from maild.testing.smtp import SmtpSink
from tests.e2e.helpers import make_config, unique_folder

FORWARD_TO = "accounting@elsewhere.example"


def _letter(subject: str, *, sender: str = "client@client.example", body: str = "hello") -> bytes:
    return letter(sender=("Client", sender), to=SALES, subject=subject, body=body)


async def _rows(db_url: str, model: Any) -> list[Any]:
    """Read every row of one of maild's tables."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            return list((await session.execute(select(model).order_by(model.id))).scalars())
    finally:
        await engine.dispose()


def _sales(
    dovecot: DovecotServer,
    tmp_path: Path,
    db_url: str,
    inbox: str,
    rules: list[dict[str, Any]],
    smtp_port: int,
) -> Config:
    """Config for the sales account watching one folder, relaying through the test sink."""
    return make_config(
        dovecot,
        tmp_path,
        db_url,
        {"sales": [inbox]},
        rules=rules,
        smtp_port=smtp_port,
        first_sync="process",
    )


def _rule(name: str, subject: str, *actions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "match": {"header": "subject", "contains": subject},
        "actions": list(actions),
        **extra,
    }


async def test_move_copy_and_flags_land_in_the_mailbox(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """A move lands in the target folder (created when missing), a copy and flags too."""
    inbox, target, archive = unique_folder("In"), unique_folder("Inv"), unique_folder("Arc")
    dovecot.create_folder("sales", inbox)
    dovecot.append_many("sales", inbox, [_letter("invoice 1"), _letter("hello there")])
    rules = [
        _rule(
            "invoices",
            "invoice",
            {"add_flag": "flagged"},
            {"add_flag": "$Invoice"},
            {"copy": archive},
            {"move": target},
        )
    ]
    config = make_config(
        dovecot, tmp_path, db_url, {"sales": [inbox]}, rules=rules, first_sync="process"
    )
    result = await Daemon(config).run(once=True)
    assert result.ok and result.outbox is not None
    assert result.outbox.dead == 0 and result.outbox.done == 4
    assert len(dovecot.uids("sales", inbox)) == 1  # the other letter stayed: implicit keep
    [moved] = dovecot.uids("sales", target)
    flags = dovecot.flags("sales", target, moved)
    assert "\\Flagged" in flags and "$Invoice" in flags
    assert len(dovecot.uids("sales", archive)) == 1
    hits = await _rows(db_url, RuleHit)
    assert [hit.rule for hit in hits] == ["invoices"]
    assert {item.status for item in await _rows(db_url, OutboxItem)} == {"done"}


async def test_move_to_deleted_marks_for_deletion(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """A move into the account's deleted folder sets \\Deleted there and marks the row."""
    inbox, trash = unique_folder("In"), unique_folder("Trash")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", trash)
    dovecot.append_many("sales", inbox, [_letter("spam offer")])
    rules = [_rule("spam", "spam", {"move": trash})]
    config = make_config(
        dovecot,
        tmp_path,
        db_url,
        {"sales": [inbox]},
        rules=rules,
        deleted=trash,
        first_sync="process",
    )
    assert (await Daemon(config).run(once=True)).ok
    assert dovecot.uids("sales", inbox) == []
    [uid] = dovecot.uids("sales", trash)
    assert "\\Deleted" in dovecot.flags("sales", trash, uid)
    [row] = await _rows(db_url, Letter)
    assert row.marked_for_deletion


async def test_forward_in_each_mode_arrives(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """attach, resend and redirect each reach the relay with the marker and the original intact."""
    inbox = unique_folder("In")
    dovecot.create_folder("sales", inbox)
    original = _letter("contract draft", body="the draft, version 3")
    dovecot.append_many("sales", inbox, [original])
    rules = [
        _rule(
            "fwd",
            "contract",
            {"forward": {"to": FORWARD_TO, "mode": "attach"}},
            {"forward": {"to": "resend@elsewhere.example", "mode": "resend"}},
            {"forward": {"to": "redirect@elsewhere.example", "mode": "redirect"}},
        )
    ]
    config = _sales(dovecot, tmp_path, db_url, inbox, rules, smtp_sink.port)
    result = await Daemon(config).run(once=True)
    assert result.outbox is not None and result.outbox.done == 3
    by_rcpt = {mail.rcpt_tos[0]: mail for mail in smtp_sink.messages}
    assert set(by_rcpt) == {FORWARD_TO, "resend@elsewhere.example", "redirect@elsewhere.example"}
    for mail in by_rcpt.values():
        assert b"X-Maild-Loop: sales@corp.example" in mail.content
    attach = email.message_from_bytes(by_rcpt[FORWARD_TO].content, policy=email.policy.default)
    assert attach["Subject"] == "Fwd: contract draft"
    assert attach["From"].addresses[0].addr_spec == "sales@corp.example"
    inner = next(part for part in attach.walk() if part.get_content_type() == "message/rfc822")
    assert inner.get_payload(0)["Subject"] == "contract draft"
    resend = email.message_from_bytes(
        by_rcpt["resend@elsewhere.example"].content, policy=email.policy.default
    )
    assert resend["From"].addresses[0].addr_spec == "sales@corp.example"
    assert "client@client.example" in str(resend["Reply-To"])
    assert "client@client.example" in str(resend["X-Original-From"])
    redirected = by_rcpt["redirect@elsewhere.example"].content.replace(b"\r\n", b"\n")
    assert redirected.endswith(original.split(b"\n\n", 1)[1])  # the server stores CRLF


async def test_smtp_4xx_is_retried_and_sent_once(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """A relay answering 451 twice gets the forward on the third attempt, exactly once."""
    inbox = unique_folder("In")
    dovecot.create_folder("sales", inbox)
    dovecot.append_many("sales", inbox, [_letter("retry me")])
    smtp_sink.fail_next(2, "451 4.3.0 try again later")
    rules = [_rule("fwd", "retry", {"forward": {"to": FORWARD_TO}})]
    config = _sales(dovecot, tmp_path, db_url, inbox, rules, smtp_sink.port)
    daemon = Daemon(config)
    result = await daemon.run(once=True)
    assert result.outbox is not None
    assert (result.outbox.done, result.outbox.retried, result.outbox.dead) == (1, 2, 0)
    exposed = daemon.metrics.render().decode()
    assert (
        'maild_outbox_effects_total{account="sales",kind="forward",outcome="retry"} 2.0' in exposed
    )
    assert len(smtp_sink.messages) == 1
    [item] = await _rows(db_url, OutboxItem)
    assert item.status == "done" and item.attempts == 3


async def test_smtp_5xx_parks_the_row_dead(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """A relay refusing with 550 parks the forward as dead with the reason, and sends nothing."""
    inbox = unique_folder("In")
    dovecot.create_folder("sales", inbox)
    dovecot.append_many("sales", inbox, [_letter("refuse me")])
    smtp_sink.fail_next(5, "550 5.1.1 no such user")
    rules = [_rule("fwd", "refuse", {"forward": {"to": FORWARD_TO}})]
    config = _sales(dovecot, tmp_path, db_url, inbox, rules, smtp_sink.port)
    result = await Daemon(config).run(once=True)
    assert result.outbox is not None and result.outbox.dead == 1
    assert result.outbox_left == {"dead": 1}
    assert smtp_sink.messages == []
    [item] = await _rows(db_url, OutboxItem)
    assert item.status == "dead" and "550" in (item.last_error or "")


async def test_first_sync_record_runs_no_rules(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """Letters found when a folder is first seen are recorded only: no rule runs on history."""
    inbox, target = unique_folder("In"), unique_folder("T")
    dovecot.create_folder("sales", inbox)
    dovecot.append_many("sales", inbox, [_letter("invoice old")])
    rules = [_rule("invoices", "invoice", {"move": target})]
    config = make_config(dovecot, tmp_path, db_url, {"sales": [inbox]}, rules=rules)
    assert (await Daemon(config).run(once=True)).ok
    assert len(dovecot.uids("sales", inbox)) == 1
    assert await _rows(db_url, OutboxItem) == []
    dovecot.append_many("sales", inbox, [_letter("invoice new")])
    assert (await Daemon(config).run(once=True)).ok
    assert len(dovecot.uids("sales", inbox)) == 1
    assert len(dovecot.uids("sales", target)) == 1


async def test_moved_letter_into_a_watched_folder_is_not_stored_twice(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """A letter maild moves into another watched folder keeps its one row, re-pointed there."""
    inbox, target = unique_folder("In"), unique_folder("T")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", target)
    dovecot.append_many("sales", inbox, [_letter("invoice 7")])
    rules = [_rule("invoices", "invoice", {"move": target}, folders=[inbox])]
    config = make_config(
        dovecot, tmp_path, db_url, {"sales": [inbox, target]}, rules=rules, first_sync="process"
    )
    assert (await Daemon(config).run(once=True)).ok
    assert (await Daemon(config).run(once=True)).ok
    rows = await _rows(db_url, Letter)
    assert len(rows) == 1
    [uid] = dovecot.uids("sales", target)
    assert rows[0].uid == uid


def _deliver(sink: SmtpSink, dovecot: DovecotServer, folders: dict[str, str], strip: bool) -> int:
    """Play the relay: put each letter the sink got into its recipient's folder; give how many."""
    delivered = 0
    for mail in sink.messages:
        raw = mail.content
        if strip:  # a relay that drops unknown headers: only the fuse can stop a loop then
            raw = b"".join(
                line
                for line in raw.splitlines(keepends=True)
                if not line.lower().startswith(b"x-maild-loop:")
            )
        for rcpt in mail.rcpt_tos:
            user = rcpt.split("@")[0]
            dovecot.append_many(user, folders[user], [raw])
            delivered += 1
    sink.clear()
    return delivered


async def _loop_rounds(
    dovecot: DovecotServer,
    tmp_path: Path,
    db_url: str,
    sink: SmtpSink,
    *,
    mode: str,
    strip: bool,
) -> list[int]:
    """Make sales and support forward everything to each other; run until nothing is sent."""
    folders = {"sales": unique_folder("L"), "support": unique_folder("L")}
    for user, folder in folders.items():
        dovecot.create_folder(user, folder)
    dovecot.append_many("sales", folders["sales"], [_letter("ping")])
    rules = [
        {
            "name": "to support",
            "accounts": ["sales"],
            "actions": [{"forward": {"to": "support@corp.example", "mode": mode}}],
        },
        {
            "name": "to sales",
            "accounts": ["support"],
            "actions": [{"forward": {"to": "sales@corp.example", "mode": mode}}],
        },
    ]
    config = make_config(
        dovecot,
        tmp_path,
        db_url,
        {user: [folder] for user, folder in folders.items()},
        rules=rules,
        smtp_port=sink.port,
        first_sync="process",
        outbox={"forward_fuse_per_hour": 3},
    )
    sent = []
    for _ in range(30):
        assert (await Daemon(config).run(once=True)).ok
        sent.append(_deliver(sink, dovecot, folders, strip))
        if sent[-1] == 0:
            break
    return sent


async def test_forward_loop_stops_at_the_marker(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """Two accounts forwarding to each other: the letter is not forwarded again by its account."""
    sent = await _loop_rounds(dovecot, tmp_path, db_url, smtp_sink, mode="resend", strip=False)
    assert sent[-1] == 0 and sum(sent) == 2


async def test_forward_loop_stops_at_the_fuse(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """When a relay strips the marker, the per-sender hourly fuse ends the loop."""
    sent = await _loop_rounds(dovecot, tmp_path, db_url, smtp_sink, mode="attach", strip=True)
    assert sent[-1] == 0 and sum(sent) <= 8


CONFIG_TEXT = """
[database]
url = "sqlite+aiosqlite:///{db}"

[[accounts]]
name = "sales"
address = "sales@corp.example"
  [accounts.imap]
  host = "127.0.0.1"
  security = "none"
  username = "sales"
  password_env = "MAILD_TEST_UNUSED"

[[rules]]
name = "{name}"
match = {{ header = "subject", contains = "{word}" }}
actions = [ {{ add_flag = "flagged" }} ]
"""


async def test_sighup_swaps_valid_rules_and_keeps_old_on_error(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """SIGHUP compiles the file beside the running rules; a broken file leaves them running."""
    import asyncio
    import os
    import signal

    from maild.settings import load_config

    monkeypatch.setenv("MAILD_TEST_UNUSED", "x")
    path = tmp_path / "maild.toml"
    path.write_text(CONFIG_TEXT.format(db=tmp_path / "m.db", name="one", word="a"))
    daemon = Daemon(load_config(path), config_path=path)
    first = daemon.rules.current.version
    task = asyncio.current_task()
    assert task is not None
    daemon.install_signal_handlers(task)
    try:
        path.write_text(CONFIG_TEXT.format(db=tmp_path / "m.db", name="two", word="b"))
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.2)
        second = daemon.rules.current.version
        assert second != first and daemon.rules.current.rules[0].name == "two"
        path.write_text(
            CONFIG_TEXT.format(db=tmp_path / "m.db", name="two", word="b") + "[[rules]]\nname = 3\n"
        )
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.2)
        assert daemon.rules.current.version == second
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def test_dry_run_replay_agrees_with_the_daemon(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """`rules replay` over the stored letters finds exactly the hits the daemon recorded."""
    from datetime import UTC, datetime

    from maild.dryrun.replay import Replayed, ReplayQuery, replay

    inbox = unique_folder("In")
    dovecot.create_folder("sales", inbox)
    dovecot.append_many(
        "sales",
        inbox,
        [
            _letter(f"{word} {i}", body=word)
            for i, word in enumerate(["invoice", "hello", "urgent"])
        ],
    )
    rules = [
        _rule("flag urgent", "urgent", {"add_flag": "flagged"}),
        _rule("invoices", "invoice", {"add_flag": "$Invoice"}, stop=True),
        {"name": "all", "actions": [{"add_flag": "$Seen-by-maild"}]},
    ]
    config = make_config(
        dovecot, tmp_path, db_url, {"sales": [inbox]}, rules=rules, first_sync="process"
    )
    assert (await Daemon(config).run(once=True)).ok
    daemon_hits = sorted((hit.letter_id, hit.rule) for hit in await _rows(db_url, RuleHit))
    replayed: list[Replayed] = []
    await replay(config, ReplayQuery(since=datetime(2000, 1, 1, tzinfo=UTC)), replayed.append)
    dry_hits = sorted(
        (item.letter_id, hit.rule)
        for item in replayed
        if item.decision is not None
        for hit in item.decision.hits
    )
    assert dry_hits == daemon_hits and len(daemon_hits) == 4  # "invoices" stops


async def test_dead_forward_is_listed_and_retried(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """`outbox list` shows a dead forward with its reason; `outbox retry` sends it next run."""
    from maild.runtime import list_outbox, retry_outbox

    inbox = unique_folder("In")
    dovecot.create_folder("sales", inbox)
    dovecot.append_many("sales", inbox, [_letter("refused once")])
    smtp_sink.fail_next(1, "550 5.7.1 relaying denied")
    rules = [_rule("fwd", "refused", {"forward": {"to": FORWARD_TO}})]
    config = _sales(dovecot, tmp_path, db_url, inbox, rules, smtp_sink.port)
    await Daemon(config).run(once=True)
    [dead] = await list_outbox(config, status="dead", limit=10)
    assert dead.kind == "forward" and dead.target == FORWARD_TO and "550" in dead.last_error
    assert await retry_outbox(config, [dead.id]) == 1
    result = await Daemon(config).run(once=True)
    assert result.outbox is not None and result.outbox.done == 1
    assert len(smtp_sink.messages) == 1
    assert await list_outbox(config, status="dead", limit=10) == []


def test_outbox_retry_needs_ids_or_all_dead(tmp_path: Path) -> None:
    """`maild outbox retry` with nothing to retry is a usage error, not a silent no-op."""
    from click.testing import CliRunner

    from maild.cli import main

    result = CliRunner().invoke(main, ["outbox", "retry", "-c", str(tmp_path / "none.toml")])
    assert result.exit_code == 2 and "--all-dead" in result.output


def test_unknown_log_level_is_a_usage_error(tmp_path: Path) -> None:
    """A mistyped --log-level is refused with the choices, not a traceback."""
    from click.testing import CliRunner

    from maild.cli import main

    result = CliRunner().invoke(main, ["--log-level", "LOUD", "check-config", "-c", "x.toml"])
    assert result.exit_code == 2 and "debug" in result.output.lower()


async def test_refused_move_to_deleted_leaves_no_deleted_flag(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    """A move the server refuses is parked dead, and the letter is not left flagged \\Deleted."""
    inbox = unique_folder("In")
    dovecot.create_folder("sales", inbox)
    dovecot.append_many("sales", inbox, [_letter("spam offer")])
    bad = "~Trash"  # a name the server refuses to create
    config = make_config(
        dovecot,
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'm.db'}",
        {"sales": [inbox]},
        rules=[_rule("spam", "spam", {"move": bad})],
        deleted=bad,
        first_sync="process",
    )
    result = await Daemon(config).run(once=True)
    assert result.outbox is not None and result.outbox.dead == 1
    [uid] = dovecot.uids("sales", inbox)
    assert "\\Deleted" not in dovecot.flags("sales", inbox, uid)
