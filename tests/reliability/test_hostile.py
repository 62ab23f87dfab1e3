"""The hostile corpus through a real Dovecot and the whole daemon, on SQLite and PostgreSQL.

Every letter must end as ``stored`` (raw kept, defects recorded), ``failed`` (raw kept, with the
reason) or ``oversize`` (its header kept); the daemon must neither crash nor stall, a letter sent
after the corpus must still arrive, and memory must stay bounded. Figures are printed, not asserted
(except a generous memory bound).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from maild.core.letter import ParsedLetter
from maild.db.engine import create_engine, session_factory
from maild.db.tables import Folder, Letter
from maild.errors import ParseError
from maild.ingest.parse import parse_letter
from maild.runtime import Daemon
from maild.settings import Config
from maild.testing.dovecot import DovecotServer
from maild.testing.samples import SALES, letter
from tests.e2e.helpers import at_least, make_config, unique_folder, wait_until
from tests.reliability.checks import MODES, check_forward, check_reply
from tests.reliability.hostile import KB, MAX_LETTER_BYTES, corpus
from tests.reliability.memory import MB, MemoryWatch

PARSE_TIMEOUT = 10.0
RULES = [
    {
        "name": "flag every letter with a subject",
        "match": {"header": "subject", "exists": True},
        "actions": [{"add_flag": "$Hostile"}],
    }
]
# What some letters must come to: (status, a phrase of the error, or of a defect when stored).
EXPECTED = {
    "nesting/multipart-depth-5000": ("failed", "pars"),  # too deep, or over the timeout
    "nesting/rfc822-depth-3000": ("failed", "nesting too deep"),
    "quadratic-headers/part-content-type-quotes-1mb": ("failed", "longer than 10 s"),
    "many-headers/headers-100000": ("stored", "HeaderLimitDefect"),
    "long-lines/subject-1mb-words": ("stored", "HeaderLimitDefect"),
    "quadratic-headers/from-nested-comment": ("stored", ""),
    "oversize/over-cap-no-header": ("oversize", "max_letter_bytes"),
}
# Generous: a worker holds one letter of at most MAX_LETTER_BYTES, about 13 times over while parsing.
WORKER_BOUND = 200 * MB + 30 * MAX_LETTER_BYTES
DAEMON_GROWTH_BOUND = 600 * MB


def _seed(dovecot: DovecotServer, folder: str) -> dict[int, tuple[str, str]]:
    """Put the corpus into the folder (APPEND, or the Maildir when IMAP cannot carry it)."""
    letters = corpus()
    appended = [item for item in letters if item.via == "append"]
    uids = dovecot.append_many("sales", folder, [item.raw for item in appended])
    placed = {uid: (item.name, item.kind) for uid, item in zip(uids, appended, strict=True)}
    for item in letters:
        if item.via == "maildir":
            placed[dovecot.deliver("sales", folder, item.raw)] = (item.name, item.kind)
    return placed


def _config(dovecot: DovecotServer, tmp_path: Path, db_url: str, folder: str) -> Config:
    """Watch the folder with the size cap and timeout under test; rules and leads run on each letter."""
    base = make_config(
        dovecot,
        tmp_path,
        db_url,
        {"sales": [folder]},
        rules=RULES,
        max_letter_bytes=MAX_LETTER_BYTES,
        parse_timeout_seconds=PARSE_TIMEOUT,
        first_sync="process",
    )
    data = base.model_dump()
    data["accounts"][0]["leads"] = {"source": "all"}
    return Config.model_validate(data)


async def _rows(db_url: str, folder: str) -> dict[int, dict[str, Any]]:
    """Read what the test checks of each stored letter, by UID."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            stmt = (
                select(
                    Letter.uid,
                    Letter.status,
                    Letter.error,
                    Letter.defects,
                    Letter.size,
                    func.length(Letter.raw).label("kept"),
                    Letter.subject,
                )
                .join(Folder, Folder.id == Letter.folder_id)
                .where(Folder.name == folder)
            )
            return {row.uid: row._asdict() for row in (await session.execute(stmt)).all()}
    finally:
        await engine.dispose()


def _check(row: dict[str, Any], name: str) -> None:
    """Hold one letter to its outcome's promise."""
    status = row["status"]
    assert status in ("stored", "failed", "oversize"), (name, status)
    assert row["kept"] > 0 or row["size"] == 0, (name, "raw lost")
    if status != "oversize":
        assert row["kept"] == row["size"], (name, "raw not kept whole")
    if status == "failed":
        assert row["error"], (name, "failed without a reason")
    assert (status == "oversize") == (row["size"] > MAX_LETTER_BYTES), (name, status, row["size"])
    if status == "oversize":
        assert "max_letter_bytes" in row["error"] and row["kept"] < row["size"], name


def _report(
    placed: dict[int, tuple[str, str]], rows: dict[int, dict[str, Any]], seconds: float
) -> str:
    """Give the outcome counts by kind and the failures' reasons, for the reliability docs."""
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    lines = []
    for uid, (name, kind) in sorted(placed.items()):
        row = rows[uid]
        by_kind[kind][row["status"]] += 1
        if row["status"] != "stored":
            lines.append(f"  {name}: {row['status']}: {(row['error'] or '')[:120]}")
    table = [
        f"  {kind}: " + ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
        for kind, counts in sorted(by_kind.items())
    ]
    total = Counter(row["status"] for row in rows.values())
    return "\n".join([f"{len(placed)} letters in {seconds:.1f} s: {dict(total)}", *table, *lines])


@pytest.mark.slow
async def test_hostile_corpus_is_stored_failed_or_oversize(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """Every hostile letter ends stored, failed or oversize; the daemon goes on; memory is bounded."""
    folder = unique_folder("H")
    dovecot.create_folder("sales", folder)
    placed = _seed(dovecot, folder)
    daemon = Daemon(_config(dovecot, tmp_path, db_url, folder))
    watch = MemoryWatch()
    async with watch.running():
        started = time.monotonic()
        task = asyncio.create_task(daemon.run())
        try:
            await wait_until(
                lambda: at_least(db_url, len(placed)), timeout=900, what="the whole corpus"
            )
            seconds = time.monotonic() - started
            assert not task.done(), "the daemon stopped"
            later = letter(
                sender=("Later", "later@client.example"), to=SALES, subject="after", body="b"
            )
            dovecot.append("sales", folder, later)
            await wait_until(
                lambda: at_least(db_url, len(placed) + 1), timeout=120, what="a later letter"
            )
        finally:
            daemon.stop.set()
            result = await asyncio.wait_for(task, 120)
    assert result.ok
    state = daemon.status.folders[("sales", folder)]
    assert state.last_error is None
    rows = await _rows(db_url, folder)
    assert len(rows) == len(placed) + 1
    for uid, (name, _) in placed.items():
        _check(rows[uid], name)
        if name in EXPECTED:
            status, phrase = EXPECTED[name]
            said = rows[uid]["error"] or " ".join(rows[uid]["defects"])
            assert rows[uid]["status"] == status and phrase in said, (name, rows[uid])
    print(_report(placed, rows, seconds), watch.summary(), sep="\n")
    assert watch.workers, "no parser worker was seen"
    assert max(watch.workers.values()) < WORKER_BOUND
    assert watch.own_peak - watch.own_before < DAEMON_GROWTH_BOUND


@pytest.mark.slow
def test_every_corpus_letter_forwards_and_is_answered_safely() -> None:
    """Each letter forwards in every mode and small ones get an auto-reply, with only maild's headers.

    Forwards are composed in the daemon's process (in a thread, but holding the GIL), so a letter
    that made them slow would slow every folder: the duration is reported. A composed
    letter must parse again when the original did (checked for letters under 64 KiB; not for the
    nesting bombs, which one more level of nesting takes past the parser's limit).
    """
    started = time.monotonic()
    for item in corpus():
        letter = _parsed(item.raw) if len(item.raw) < 64 * KB else None
        for mode in MODES:
            check_forward(mode, item.raw, parse_again=bool(letter) and item.kind != "nesting")
        if letter is not None:
            check_reply(letter)
    print(f"forwards of the corpus composed in {time.monotonic() - started:.1f} s")


def _parsed(raw: bytes) -> ParsedLetter | None:
    """Parse a letter, or give None when it cannot be parsed."""
    try:
        return parse_letter(raw)
    except ParseError:
        return None
