"""`maild rules apply` on letters already stored: real Dovecot, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select, update

from maild.apply.run import ApplyReport, apply_rules
from maild.cli import main
from maild.db.engine import create_engine, session_factory
from maild.db.tables import Letter, OutboxItem, RuleHit
from maild.dryrun.replay import ReplayQuery
from maild.runtime import Daemon
from maild.settings import Config
from maild.testing.dovecot import DovecotServer
from maild.testing.samples import SALES, letter
from tests.e2e.helpers import make_config, unique_folder, write_config

ALL = ReplayQuery(since=datetime(2000, 1, 1, tzinfo=UTC))


def _from(name: str, address: str, n: int, *, head: bytes = b"") -> bytes:
    raw = letter(sender=(name, address), to=SALES, subject=f"letter {n}", body="hello")
    return head + raw


def _mailbox(matching: int, others: int, **extra: bytes) -> list[bytes]:
    """Letters from ivan@ (the rule's sender) and from ann@, interleaved."""
    out = [_from("Ivan", "ivan@client.example", n, **extra) for n in range(matching)]
    out += [_from("Ann", "ann@client.example", n) for n in range(others)]
    return out


def _move_rule(target: str, match: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "ivan",
        "match": match or {"address": "from", "matches": "^ivan@"},
        "actions": [{"move": target}],
    }


async def _rows(db_url: str, model: Any) -> list[Any]:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            return list((await session.execute(select(model).order_by(model.id))).scalars())
    finally:
        await engine.dispose()


async def _recorded(dovecot: DovecotServer, tmp_path: Path, db_url: str, **kw: Any) -> Config:
    """Ingest the folder with first_sync = "record": stored, no rule run, nothing queued."""
    config = make_config(dovecot, tmp_path, db_url, {"sales": [kw["inbox"]]}, rules=kw["rules"])
    assert (await Daemon(config).run(once=True)).ok
    assert await _rows(db_url, OutboxItem) == []
    return config


async def test_apply_moves_exactly_the_matching_letters_once(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """Stored letters the rule picks are moved and their rows done; a second run does nothing."""
    inbox, target = unique_folder("In"), unique_folder("Ivan")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", target)
    dovecot.append_many("sales", inbox, _mailbox(6, 4))
    config = await _recorded(dovecot, tmp_path, db_url, inbox=inbox, rules=[_move_rule(target)])
    report = await apply_rules(config, ALL)
    assert report.ok and report.evaluated == 10 and report.hits == {"ivan": 6}
    assert report.queued == {"move": 6} and report.already_queued == 0
    assert report.performed == 6 and report.dead == [] and report.skipped == []
    assert report.headers_read == 0  # a From rule reads the stored row only
    assert len(dovecot.uids("sales", target)) == 6 and len(dovecot.uids("sales", inbox)) == 4
    rows = await _rows(db_url, OutboxItem)
    assert len(rows) == 6 and {row.status for row in rows} == {"done"}
    assert len(await _rows(db_url, RuleHit)) == 6

    again = await apply_rules(config, ALL)
    assert again.ok and again.hits == {"ivan": 6} and again.queued == {}
    assert again.already_queued == 6 and again.hits_recorded == 0 and again.performed == 0
    assert len(await _rows(db_url, OutboxItem)) == 6 and len(await _rows(db_url, RuleHit)) == 6
    assert len(dovecot.uids("sales", target)) == 6


async def test_apply_queues_nothing_the_daemon_queued_at_ingest(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """Letters decided at ingest already have their rows: apply finds them by their keys."""
    inbox, target = unique_folder("In"), unique_folder("Ivan")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", target)
    dovecot.append_many("sales", inbox, _mailbox(3, 2))
    config = make_config(
        dovecot,
        tmp_path,
        db_url,
        {"sales": [inbox]},
        rules=[_move_rule(target)],
        first_sync="process",
    )
    assert (await Daemon(config).run(once=True)).ok
    report = await apply_rules(config, ALL)
    assert report.queued == {} and report.already_queued == 3 and report.performed == 0
    assert len(await _rows(db_url, OutboxItem)) == 3
    assert len(dovecot.uids("sales", target)) == 3


async def test_header_rule_reads_the_header_block_and_failed_letters_are_skipped(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """A rule on X-Priority works from the stored header block; a failed letter is reported."""
    inbox, target = unique_folder("In"), unique_folder("Urgent")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", target)
    urgent = _mailbox(3, 0, head=b"X-Priority: 1\r\n")
    dovecot.append_many("sales", inbox, urgent + _mailbox(0, 2))
    rule = _move_rule(target, {"header": "x-priority", "is": "1"})
    config = await _recorded(dovecot, tmp_path, db_url, inbox=inbox, rules=[rule])
    first = min(row.id for row in await _rows(db_url, Letter))
    engine = create_engine(db_url)
    try:
        async with session_factory(engine).begin() as session:
            await session.execute(update(Letter).where(Letter.id == first).values(status="failed"))
    finally:
        await engine.dispose()
    report = await apply_rules(config, ALL)
    assert report.ok and report.evaluated == 4 and report.headers_read == 4
    assert report.hits == {"ivan": 2} and report.performed == 2
    [skipped] = report.skipped
    assert skipped.letter_id == first and skipped.reason.startswith("failed")
    assert len(dovecot.uids("sales", target)) == 2 and len(dovecot.uids("sales", inbox)) == 3


def _toml(dovecot: DovecotServer, tmp_path: Path, db_url: str, inbox: str, target: str) -> Path:
    """Write the config file an admin would, the move rule included."""
    rule = f"""[[rules]]
name = "ivan"
match = {{ address = "from", matches = "^ivan@" }}
actions = [{{ move = "{target}" }}]
"""
    return write_config(dovecot, tmp_path, db_url, inbox, more=rule)


def test_cli_prints_the_summary_and_json(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """`maild rules apply` says what it evaluated, queued and performed; --json the same."""
    inbox, target = unique_folder("In"), unique_folder("Ivan")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", target)
    dovecot.append_many("sales", inbox, _mailbox(2, 1))
    path = _toml(dovecot, tmp_path, db_url, inbox, target)
    runner = CliRunner()
    assert runner.invoke(main, ["run", "--once", "-c", str(path)]).exit_code == 0
    args = ["rules", "apply", "-c", str(path), "--since", "2000-01-01"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "letters evaluated: 3; skipped: 0" in lines
    assert "  ivan: 2" in lines and "effects queued: 2 (move: 2)" in lines
    assert "performed: 2; dead: 0; retried: 0; still pending: 0" in lines
    result = runner.invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout.splitlines()[-1])
    assert document["queued"] == {} and document["already_queued"] == 2
    assert document["hits"] == {"ivan": 2} and document["performed"] == 0
    unknown = runner.invoke(main, [*args, "--rule", "nobody"])
    assert unknown.exit_code == 2 and 'unknown rule "nobody"' in unknown.output


def test_report_is_ok_only_with_nothing_pending() -> None:
    """A row left pending (a retry due later) makes the command fail, so a script can tell."""
    assert ApplyReport(hits={}).ok
    assert not ApplyReport(hits={}, pending=1).ok


def _variety() -> list[bytes]:
    """Letters that exercise every view of the row: bodies, attachments, Cc, headers, no subject."""
    pdf = [("invoice.pdf", "application/pdf", b"%PDF-1.4 x")]
    return [
        letter(
            sender=("Ivan Petrov", "ivan@client.example"),
            to=SALES,
            subject="invoice 7",
            body="see attached",
            attachments=pdf,
        ),
        letter(
            sender=("Ann", "ann@client.example"),
            to=SALES,
            subject="hello",
            body="",
            html="<p>a <b>refund</b> please</p>",
        ),
        b"X-Mailer: BulkSender 2\r\n"
        + letter(sender=("Zoe", "zoe@other.example"), to=SALES, subject="news", body="refund"),
        b"From: Nobody <nobody@client.example>\r\nTo: sales@corp.example\r\n"
        b"Cc: Boss <boss@corp.example>\r\nMessage-ID: <no-subject@x>\r\n\r\nno subject here\r\n",
        b"From: Empty <empty@client.example>\r\nTo: sales@corp.example\r\nSubject:\r\n"
        b"Message-ID: <empty-subject@x>\r\n\r\nan empty subject\r\n",
    ]


async def test_apply_decides_as_replay_does_from_the_full_parse(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """Built from the stored row (and the header block where needed), letters get replay's hits."""
    from maild.dryrun.replay import Replayed, replay

    inbox = unique_folder("In")
    dovecot.create_folder("sales", inbox)
    dovecot.append_many("sales", inbox, _variety())
    conditions: dict[str, dict[str, Any]] = {
        "from is": {"address": "from", "is": "ivan@client.example"},
        "recipient domain": {"domain": "recipient", "is": "corp.example"},
        "name": {"display_name": "from", "contains": "petrov"},
        "subject": {"header": "subject", "contains": "invoice"},
        "no subject": {"header": "subject", "exists": False},
        "mailer": {"header": "x-mailer", "contains": "bulk"},
        "cc header": {"header": "cc", "contains": "boss"},
        "text": {"body": "text", "contains": "refund"},
        "html": {"body": "html", "contains": "<b>"},
        "pdf": {"attachment": "name", "matches": "\\.pdf$"},
        "attached": {"has_attachment": True},
    }
    rules = [
        {"name": name, "match": match, "actions": [{"add_flag": f"$R{n}"}]}
        for n, (name, match) in enumerate(conditions.items())
    ]
    config = await _recorded(dovecot, tmp_path, db_url, inbox=inbox, rules=rules)
    replayed: list[Replayed] = []
    await replay(config, ALL, replayed.append)
    expected = sorted(
        (item.letter_id, hit.rule)
        for item in replayed
        if item.decision is not None
        for hit in item.decision.hits
    )
    report = await apply_rules(config, ALL)
    assert report.ok and report.evaluated == 5 and report.dead == []
    applied = sorted((hit.letter_id, hit.rule) for hit in await _rows(db_url, RuleHit))
    assert applied == expected
    assert {rule for _, rule in applied} == set(conditions)  # each rule hit some letter
