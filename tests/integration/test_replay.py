"""`maild rules replay` on SQLite and PostgreSQL: the same decisions as `rules test`, read-only."""

from __future__ import annotations

import asyncio
import gc
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update

from maild.cli import main
from maild.core.letter import FetchedMessage
from maild.db import repo
from maild.db.engine import create_engine, session_factory
from maild.db.tables import Letter
from maild.dryrun.replay import Replayed, ReplayQuery, replay
from maild.errors import ParseError
from maild.ingest.parse import parse_letter
from maild.pipeline import FolderStore, prepare_folders
from maild.runtime import upgrade_database
from maild.settings import Config, load_config
from maild.testing.samples import MALFORMED, letter
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

pytestmark = pytest.mark.usefixtures("db_url")

BIG_RULE = """
[[rules]]
name = "big"
match = { size_over = 5000000 }
actions = [ { add_flag = "$Big" } ]
"""
BIG_SIZE = 12_000_000
BIG = letter(
    sender=("Anna Petrova", "anna.petrova@client-one.example"),
    to="sales@corp.example",
    subject="Drawings (large)",
    body="see attached",
    index=11,
)
BIG_HEADER = BIG.split(b"\n\n", 1)[0] + b"\n\n"


def at(day: int, hour: int = 9) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


# (account, folder, uid, raw, INTERNALDATE, oversize): stored in this order, so ids differ from
# the order by date.
LETTERS: list[tuple[str, str, int, bytes, datetime | None, bool]] = [
    ("support", "INBOX", 1, DAMAGED, at(2, 12), False),
    ("support", "INBOX", 2, TRACKING, at(6), False),
    ("support", "INBOX", 3, TRACKING.replace(b"Tracking", b"Tracking again"), None, False),
    ("sales", "INBOX", 1, QUOTE, at(1), False),
    ("sales", "INBOX", 2, QUOTE_REPLY, at(2, 12), False),  # same time as DAMAGED: id decides
    ("sales", "INBOX", 3, SPAM, at(3), False),
    ("sales", "INBOX", 4, MALFORMED["nested too deep"], at(4), False),
    ("sales", "Leads/Web", 1, WEB_FORM, at(1, 12), False),
    ("sales", "Leads/Web", 2, BIG_HEADER, at(5), True),
]


async def _store(config: Config) -> None:
    """Migrate and fill the database through maild's own FolderStore, as the daemon does."""
    await upgrade_database(config)
    engine = create_engine(config.database_url())
    try:
        sessions = session_factory(engine)
        ids = await prepare_folders(sessions, config)
        stores: dict[tuple[str, str], FolderStore] = {}
        for account, folder, uid, raw, when, oversize in LETTERS:
            store = stores.get((account, folder))
            if store is None:
                store = FolderStore(
                    sessions=sessions,
                    account=account,
                    folder=folder,
                    folder_id=ids[(account, folder)],
                )
                await store.set_uidvalidity(7, changed=False)
                stores[(account, folder)] = store
            message = FetchedMessage(
                uid=uid,
                raw=raw,
                size=BIG_SIZE if oversize else len(raw),
                internaldate=when,
                headers_only=oversize,
            )
            try:
                parsed, error = parse_letter(raw), None
            except ParseError as exc:
                parsed, error = None, str(exc)
            if oversize:
                error = "over max_letter_bytes"
            assert await store.store(message, parsed, error) in ("stored", "failed", "oversize")
    finally:
        await engine.dispose()


async def snapshot(path: Path) -> list[tuple[Any, ...]]:
    """Read every letter's id, status, error and update time, to show a replay writes nothing."""
    engine = create_engine(load_config(path, check_secrets=False).database_url())
    try:
        async with session_factory(engine)() as session:
            rows = await session.execute(
                select(Letter.id, Letter.status, Letter.error, Letter.updated_at).order_by(
                    Letter.id
                )
            )
            return [tuple(row) for row in rows.all()]
    finally:
        await engine.dispose()


@pytest.fixture
def config(db_url: str, tmp_path: Path) -> Path:
    """Write the config and store the sample letters in the database it names."""
    path = write_config(tmp_path, db_url, RULES + BIG_RULE)
    asyncio.run(_store(load_config(path, check_secrets=False)))
    return path


def invoke(*args: str, raw: bytes | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=raw)


def replay_json(config: Path, *args: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run a replay with --json; give the letter lines and the summary."""
    result = invoke("rules", "replay", "-c", str(config), "--json", *args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert "summary" in lines[-1]
    return lines[:-1], lines[-1]["summary"]


def places(lines: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(line["account"], line["folder"], line.get("subject", "?")) for line in lines]


def test_replay_agrees_with_rules_test(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stored letter gets from replay the decision `rules test` gives for its bytes and place."""
    monkeypatch.setattr("maild.dryrun.replay.PAGE_LETTERS", 2)
    pages: list[int] = []

    async def stored_letters(session: Any, ids: list[int]) -> list[repo.StoredLetter]:
        pages.append(len(ids))
        return await real_stored_letters(session, ids)

    real_stored_letters = repo.stored_letters
    monkeypatch.setattr(repo, "stored_letters", stored_letters)
    before = asyncio.run(snapshot(config))
    lines, summary = replay_json(config, "--since", "2026-11-01")
    assert pages == [2, 2, 2, 2, 1]  # raw bytes are read a page at a time
    assert asyncio.run(snapshot(config)) == before  # nothing was written
    assert places(lines) == [
        ("sales", "INBOX", "Quote for 200 units of model X-42"),
        ("sales", "Leads/Web", "Web form: John Miller, Acme"),
        ("support", "INBOX", "Delivery damaged"),
        ("sales", "INBOX", "Re: Quote for 200 units of model X-42"),
        ("sales", "INBOX", "Cheap VIAGRA"),
        ("sales", "INBOX", "?"),
        ("sales", "Leads/Web", "Drawings (large)"),
        ("support", "INBOX", "Tracking number?"),
        ("support", "INBOX", "Tracking again number?"),
    ]
    by_subject = {line.get("subject"): line for line in lines}
    for account, folder, _, raw, _, oversize in LETTERS:
        if oversize or raw == MALFORMED["nested too deep"]:
            continue
        tried = invoke(
            "rules", "test", "-c", str(config), "--account", account, "--folder", folder,
            "--json", "-", raw=raw,
        )  # fmt: skip
        assert tried.exit_code == 0, tried.output
        document = json.loads(tried.stdout)
        line = by_subject[document["subject"]]
        assert {key: line[key] for key in document} == document
    assert summary == {
        "tried": 9,
        "not_evaluated": 1,
        "header_only": 1,
        "implicit_keeps": 2,
        "leads_opened": 0,
        "matched": {"spam": 1, "quotes": 1, "web leads": 2, "with attachment": 2, "big": 1},
        "effects": {
            "forward": 1,
            "add_flag": 4,
            "set_responsible": 2,
            "copy": 2,
            "move": 1,
        },
    }


def test_failed_and_oversize_letters(config: Path) -> None:
    """A letter that still cannot be parsed is reported; an oversize one is judged on its header and full size."""
    lines, _ = replay_json(config, "--since", "2026-11-04", "--until", "2026-11-04")
    (failed,) = lines
    assert failed["status"] == "failed"
    assert "nest" in failed["error"]
    assert "results" not in failed
    lines, _ = replay_json(config, "--since", "2026-11-05", "--until", "2026-11-05")
    (big,) = lines
    assert (big["status"], big["size"], big["subject"]) == (
        "oversize",
        BIG_SIZE,
        "Drawings (large)",
    )
    assert [r["rule"] for r in big["results"] if r["matched"]] == ["web leads", "big"]
    assert {"kind": "add_flag", "flag": "$Big"} in big["effects"]


def test_text_lines_and_summary(config: Path) -> None:
    """One line per letter with id, place, subject, hits and effects; the totals after."""
    result = invoke(
        "rules", "replay", "-c", str(config), "--since", "2026-11-01", "--account", "sales"
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(line.startswith("letter ") for line in lines[:6])
    body = [line.split("  ", 1)[1] for line in lines[:6]]
    assert body.pop(4).startswith("sales:INBOX  [failed] not evaluated: cannot parse letter: ")
    assert body == [
        'sales:INBOX  "Quote for 200 units of model X-42"  hit: quotes (stop) -> '
        "forward to accounting@corp.example (attach); add flag \\Seen",
        'sales:Leads/Web  "Web form: John Miller, Acme"  hit: web leads -> set responsible j.smith',
        'sales:INBOX  "Re: Quote for 200 units of model X-42"  hit: with attachment -> '
        "copy to Attachments; add flag \\Seen",
        'sales:INBOX  "Cheap VIAGRA"  hit: spam -> move to Trash (marks it deleted)',
        'sales:Leads/Web  [oversize: header only] "Drawings (large)"  hit: web leads, big -> '
        "set responsible j.smith; add flag $Big",
    ]
    assert lines[6:] == [
        "letters tried: 6 (1 not evaluated: cannot be parsed; 1 oversize, evaluated on the header only)",
        "matched per rule:",
        "  spam: 1",
        "  quotes: 1",
        "  web leads: 2",
        "  with attachment: 1",
        "  big: 1",
        "effects per kind:",
        "  forward: 1",
        "  add_flag: 3",
        "  set_responsible: 2",
        "  copy: 1",
        "  move: 1",
        "implicit keeps: 0",
        "leads opened: 0",
    ]


def test_filters(config: Path) -> None:
    """--since, --until (a date includes its day), --account, --folder and --limit choose the letters."""
    lines, _ = replay_json(config, "--since", "2026-11-02", "--until", "2026-11-03")
    assert [line["subject"] for line in lines] == [
        "Delivery damaged",
        "Re: Quote for 200 units of model X-42",
        "Cheap VIAGRA",
    ]
    lines, _ = replay_json(config, "--since", "2026-11-02T12:00:01", "--until", "2026-11-03T09:00")
    assert lines == []
    lines, _ = replay_json(config, "--since", "2026-11-01T13:00+02:00", "--folder", "Leads/Web")
    assert [line["subject"] for line in lines] == [
        "Web form: John Miller, Acme",
        "Drawings (large)",
    ]
    lines, _ = replay_json(
        config, "--since", "2026-01-01", "--account", "support", "--folder", "INBOX"
    )
    assert [line["subject"] for line in lines] == [
        "Delivery damaged",
        "Tracking number?",
        "Tracking again number?",
    ]
    lines, summary = replay_json(config, "--since", "2026-01-01", "--limit", "2")
    assert [line["subject"] for line in lines] == [
        "Quote for 200 units of model X-42",
        "Web form: John Miller, Acme",
    ]
    assert summary["tried"] == 2
    lines, _ = replay_json(config, "--since", "2030-01-01")
    assert lines == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "nobody"], 'unknown account "nobody" (accounts: sales, support)'),
        (
            ["--folder", "Spam"],
            'folder "Spam" is not watched by any account (watched: INBOX, Leads/Web)',
        ),
        (["--until", "2026-10-01"], "--until must be later than --since"),
    ],
)
def test_bad_options(config: Path, args: list[str], message: str) -> None:
    """Unknown accounts and folders, and an empty date range, are refused with exit 2."""
    result = invoke("rules", "replay", "-c", str(config), "--since", "2026-11-01", *args)
    assert result.exit_code == 2
    assert result.stderr == f"maild: error: {message}\n"


def test_database_without_schema(db_url: str, tmp_path: Path) -> None:
    """A database maild never migrated is refused with the `maild db upgrade` hint, and not created."""
    config = write_config(tmp_path, db_url)
    result = invoke("rules", "replay", "-c", str(config), "--since", "2026-11-01")
    assert result.exit_code == 1
    assert result.stderr.startswith("maild: error: ")
    assert "run `maild db upgrade -c CONFIG`" in result.stderr
    assert not (tmp_path / "maild.db").exists()


def test_letters_maild_sent_are_not_replayed(config: Path) -> None:
    """A letter stored as one maild sent is left out: rules decide incoming letters only."""

    async def mark_sent() -> None:
        engine = create_engine(load_config(config, check_secrets=False).database_url())
        try:
            async with session_factory(engine).begin() as session:
                await session.execute(
                    update(Letter).where(Letter.subject == "Cheap VIAGRA").values(direction="out")
                )
        finally:
            await engine.dispose()

    asyncio.run(mark_sent())
    lines, summary = replay_json(config, "--since", "2026-11-01")
    assert "Cheap VIAGRA" not in [line.get("subject") for line in lines]
    assert summary["tried"] == 8


def test_a_reader_that_goes_away_leaves_no_parse_unretrieved(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When printing fails (`| head -1` closed the pipe), the page's other parses, a failed one
    among them, are let go: asyncio reports no exception as never retrieved."""
    settings = load_config(config, check_secrets=False)

    def emit(item: Replayed) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        asyncio.run(replay(settings, ReplayQuery(since=at(1, 0)), emit))
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
