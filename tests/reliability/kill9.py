"""kill -9 at random moments: the real daemon, killed and restarted, loses and doubles nothing.

Run by hand (the CI test runs the same code, smaller)::

    python -m tests.reliability.kill9 --letters 2000 --kills 20 --db sqlite
    python -m tests.reliability.kill9 --letters 2000 --kills 20 --db postgresql [--pg-url URL]

One run starts a private Dovecot and an SMTP sink (in this process), seeds one mailbox with
N letters from many senders, and runs ``python -m maild run`` as a child process with a rule
that forwards every fourth letter and the account's autoresponder switched on. Each kill is
aimed at a random point of the whole work (letters stored plus effects performed), drawn
uniformly, so kills fall in the ingest, the dispatch of the outbox and the start-up alike;
once the daemon has got there it gets SIGKILL after a further random 0-1 s (longer than one
effect takes, so the moment is not tied to the commit that moved the work past the point),
and is started again. A last run is left to finish and is stopped with SIGTERM. Then the
checks:

- every letter stored exactly once, none failed;
- every forward and auto-reply the relay received at least once and at most twice: a letter
  sent and killed before its outbox row was marked done is sent again after the lease, and
  that is the only duplicate allowed; the duplicates are counted (the goal is 0);
- every outbox row done, none left leased; every auto-reply stored once as an outgoing letter
  and filed once in Sent;
- the folder cursor: UIDVALIDITY as the server says, ``last_uid`` the largest UID stored;
- no process of a killed daemon (its parser workers) left running.

The summary gives the figures; ``--seed`` repeats a run's kill points (not the daemon's pace).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from maild.db.tables import Folder, Letter, OutboxItem
from maild.testing.dovecot import DovecotServer
from maild.testing.postgres import pg_admin
from maild.testing.smtp import ReceivedMail, SmtpSink

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT, ADDRESS, INBOX, SENT = "support", "support@corp.example", "INBOX", "Sent"
DESK = "desk@partner.example"
TAG = "[fwd]"
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
_NUMBER = re.compile(r"Order (\d+)")


@dataclass(frozen=True)
class Plan:
    """The size of a run and its timings: letters, senders, kills, the leases.

    ``lease_seconds`` is both the outbox's (rows a killed daemon had claimed come back) and
    the folders' (the next start takes over the folder the killed one held).
    """

    letters: int = 2000
    kills: int = 20
    senders: int = 400
    seed: int = 0
    lease_seconds: float = 2.0
    jitter_seconds: float = 1.0
    finish_seconds: float = 180.0

    @property
    def tagged(self) -> list[int]:
        """Give the letters the rule forwards."""
        return [i for i in range(self.letters) if forwarded(i)]

    @property
    def sender_count(self) -> int:
        """Give how many distinct senders write (each gets one auto-reply)."""
        return min(self.senders, self.letters)

    @property
    def effects(self) -> int:
        """Give the outbox rows the run must end with: one per forward and per auto-reply."""
        return len(self.tagged) + self.sender_count


def forwarded(i: int) -> bool:
    """Tell whether letter i carries the tag the rule forwards: every fourth one does."""
    return i % 4 == 1


def sender(i: int, senders: int) -> str:
    """Give letter i's sender: senders take turns, so each writes letters/senders letters."""
    n = i % senders
    return f"client{n:04d}@client{n % 7}.example"


def make_letter(i: int, plan: Plan, token: str) -> bytes:
    """Compose letter i as a server delivers it: Return-Path first, addressed to the account."""
    who = sender(i, plan.sender_count)
    subject = f"Order {i:05d}" + (f" {TAG}" if forwarded(i) else "")
    head = (
        f"Return-Path: <{who}>\r\n"
        f"From: Client {i % plan.sender_count} <{who}>\r\n"
        f"To: Corp Support <{ADDRESS}>\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <k9-{i}-{token}@client.example>\r\n"
        "Date: Fri, 01 Jan 2027 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
    )
    body = f"Letter {i} of {plan.letters}: please confirm the order.\r\n"
    return (head + "\r\n" + body).encode("utf-8")


def _toml(value: str) -> str:
    """Quote a string for TOML (JSON's escapes are TOML's)."""
    return json.dumps(value)


def write_config(
    workdir: Path, db_url: str, dovecot: DovecotServer, smtp_port: int, plan: Plan
) -> Path:
    """Write the daemon's config file: one account, one forward rule, the autoresponder on."""
    secret = workdir / "support.password"
    secret.write_text(dovecot.users[ACCOUNT] + "\n", encoding="utf-8")
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = (now - timedelta(days=1)).isoformat(), (now + timedelta(days=1)).isoformat()
    text = f"""\
[database]
url = {_toml(db_url)}

[daemon]
health_listen = ""
parse_workers = 2
first_sync = "process"
reconnect_max_seconds = 1
shutdown_grace_seconds = 20
lease_seconds = {max(plan.lease_seconds, 1)}

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"

[outbox]
lease_seconds = {plan.lease_seconds}
retry_base_seconds = 0.2
poll_seconds = 0.5

[[accounts]]
name = "{ACCOUNT}"
address = "{ADDRESS}"
display_name = "Corp Support"

  [accounts.imap]
  host = "{dovecot.host}"
  port = {dovecot.port}
  security = "none"
  username = "{ACCOUNT}"
  password_file = {_toml(str(secret))}

  [accounts.folders]
  watch = ["{INBOX}"]
  sent = "{SENT}"

  [accounts.autoreply]
  enabled = true
  start = {start}
  end = {end}
  text = "We are away; your letter is in good hands."

[[rules]]
name = "tagged to the desk"
match = {{ header = "subject", contains = "{TAG}" }}
actions = [ {{ forward = {{ to = "{DESK}" }} }} ]
"""
    path = workdir / "maild.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# The daemon as a child process
# --------------------------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """List the live processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[1].split()
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class DaemonProcess:
    """``python -m maild run`` in a process group of its own, logging to one file per start."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def start(self) -> None:
        """Start the daemon; its parser workers join its process group."""
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILD_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "maild", "--log-format", "json", "run", "-c"]
        log_path = self.logs / f"run-{self.starts:02d}.log"
        with log_path.open("wb") as log_file:  # a file, not a pipe: a full pipe would stall it
            self.process = subprocess.Popen(
                [*command, str(self.config)],
                env=env,
                cwd=self.logs,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        self.pid = self.process.pid

    def started(self) -> bool:
        """Tell whether the running daemon has logged that it started (signals are handled)."""
        log_path = self.logs / f"run-{self.starts:02d}.log"
        return b'"daemon_started"' in log_path.read_bytes()

    def exited(self) -> int | None:
        """Give the exit code if the daemon ended by itself, else None."""
        return None if self.process is None else self.process.poll()

    def kill(self, grace: float = 3.0) -> int:
        """SIGKILL the daemon's main process only, as ``kill -9 PID`` does; give its leftovers.

        Leftovers are processes of its group still alive ``grace`` seconds later (parser workers
        that did not notice their parent died); they are killed so the run can go on.
        """
        process = self._take()
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + grace
        while group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = group_members(process.pid)
        if left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        return len(left)

    def stop(self, timeout: float = 60.0) -> int:
        """Stop the daemon with SIGTERM, as an admin does, and give its exit code."""
        process = self._take()
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return -9

    def _take(self) -> subprocess.Popen[bytes]:
        """Give the running process and forget it."""
        if self.process is None:
            raise RuntimeError("the daemon is not running")
        process, self.process = self.process, None
        return process

    def error_lines(self) -> list[str]:
        """Give every log line at error level or worse, from every start."""
        lines = []
        for path in sorted(self.logs.glob("run-*.log")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("level") in ("error", "critical"):
                        lines.append(f"{path.name}: {line[:300]}")
        return lines


# --------------------------------------------------------------------------------------------
# Reading progress and results
# --------------------------------------------------------------------------------------------


def reader(db_url: str) -> AsyncEngine:
    """Open the database for reading only: plain SQLite reads, without maild's write lock."""
    return create_async_engine(db_url)


async def progress(engine: AsyncEngine) -> tuple[int, int]:
    """Give (letters stored, outbox rows done); (0, 0) before the schema exists.

    Letters are read from the folder's cursor (UIDs start at 1 in a fresh folder), which is
    one row, so polling often costs the daemon nothing.
    """
    try:
        async with engine.connect() as conn:
            letters = await conn.scalar(select(Folder.last_uid).where(Folder.name == INBOX))
            done = await conn.scalar(
                select(func.count()).select_from(OutboxItem).where(OutboxItem.status == "done")
            )
    except Exception:
        return 0, 0
    return int(letters or 0), int(done or 0)


async def finished(engine: AsyncEngine, plan: Plan) -> bool:
    """Tell whether every letter is stored and no expected effect is still pending."""
    try:
        async with engine.connect() as conn:
            letters = await conn.scalar(
                select(func.count()).select_from(Letter).where(Letter.direction == "in")
            )
            found = await conn.execute(
                select(OutboxItem.status, func.count()).group_by(OutboxItem.status)
            )
            rows = {str(status): int(n) for status, n in found.all()}
    except Exception:
        return False
    total = sum(rows.values())
    return letters == plan.letters and total >= plan.effects and not rows.get("pending")


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class Kill:
    """One SIGKILL: when, how far the work was, and what the dead daemon left running."""

    number: int
    at: float
    letters: int
    effects: int
    leftovers: int
    mails: int = 0


@dataclass
class Tally:
    """One kind of effect: how many were expected, sent, duplicated, missing, unexpected."""

    expected: int = 0
    sent: int = 0
    duplicates: int = 0
    missing: int = 0
    over_twice: int = 0
    unexpected: int = 0
    one_connection: int = 0
    twice: dict[Any, list[tuple[int, str]]] = field(default_factory=dict)


@dataclass
class Report:
    """The figures of a run and every problem the checks found."""

    plan: Plan
    db: str
    kills: list[Kill] = field(default_factory=list)
    letters_stored: int = 0
    letters_doubled: int = 0
    letters_missing: int = 0
    letters_failed: int = 0
    forwards: Tally = field(default_factory=Tally)
    replies: Tally = field(default_factory=Tally)
    outbox: dict[str, int] = field(default_factory=dict)
    retried_rows: int = 0
    stuck_rows: int = 0
    replies_stored: int = 0
    sent_copies: int = 0
    cursor: str = ""
    lease: str = ""
    leftovers: int = 0
    final_exit: int | None = None
    final_pid: int = 0
    error_lines: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Render the figures as the readable text a person checks."""
        f, r = self.forwards, self.replies
        lines = [
            f"kill -9: {self.plan.letters} letters from {self.plan.sender_count} senders, "
            f"{len(self.kills)} kills, {self.db}, seed {self.plan.seed}, "
            f"lease {self.plan.lease_seconds:g} s",
            f"  letters       stored {self.letters_stored}, doubled {self.letters_doubled}, "
            f"missing {self.letters_missing}, failed {self.letters_failed}",
            f"  forwards      expected {f.expected}, sent {f.sent}, duplicates {f.duplicates}, "
            f"missing {f.missing}, unexpected {f.unexpected}",
            f"  auto-replies  expected {r.expected}, sent {r.sent}, duplicates {r.duplicates}, "
            f"missing {r.missing}, unexpected {r.unexpected}",
            f"  outbox        {_counts(self.outbox)}; rows attempted more than once "
            f"{self.retried_rows}; stuck {self.stuck_rows}",
            f"  Sent          replies stored {self.replies_stored}, copies in Sent "
            f"{self.sent_copies}",
            f"  cursor        {self.cursor}; lease {self.lease}",
            f"  processes     left running by killed daemons: {self.leftovers}; "
            f"last run's exit code {self.final_exit}; error log lines {len(self.error_lines)}",
            "  time          "
            + ", ".join(f"{name} {value:.1f} s" for name, value in self.seconds.items()),
            "  kills (s since the first start: letters stored / effects done)",
        ]
        lines += _kill_rows(self.kills)
        lines += self._duplicate_rows()
        if self.problems:
            lines.append("PROBLEMS:")
            lines += [f"  - {problem}" for problem in self.problems]
        else:
            lines.append("OK: nothing lost, nothing doubled beyond the one resend a kill allows")
        return "\n".join(lines)

    def _duplicate_rows(self) -> list[str]:
        """Name each effect sent more than once, with the daemon starts that sent it."""
        rows = []
        for name, tally in (("forward of letter", self.forwards), ("auto-reply to", self.replies)):
            for key, copies in sorted(tally.twice.items(), key=lambda item: item[1][0][0]):
                starts = ", ".join(str(self.start_of(index)) for index, _ in copies)
                rows.append(f"    {name} {key}: sent by starts {starts}")
        return ["  duplicates (start n is the one ended by kill n)", *rows] if rows else []

    def start_of(self, index: int) -> int:
        """Give the daemon start that sent the sink's message number ``index``."""
        for kill in self.kills:
            if index < kill.mails:
                return kill.number
        return len(self.kills) + 1


def _counts(counts: dict[str, int]) -> str:
    """Render row counts by status."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "empty"


def _kill_rows(kills: list[Kill]) -> list[str]:
    """Render the kills four to a line."""
    cells = [f"#{k.number:<2} {k.at:6.1f}: {k.letters:5} / {k.effects:<5}" for k in kills]
    return [("    " + "   ".join(cells[i : i + 4])).rstrip() for i in range(0, len(cells), 4)]


async def run_kill9(
    dovecot: DovecotServer,
    sink: SmtpSink,
    db_url: str,
    workdir: Path,
    plan: Plan,
    *,
    say: Callable[[str], None] = lambda _text: None,
) -> Report:
    """Seed, kill the daemon ``plan.kills`` times at random moments, let it finish, check."""
    report = Report(plan, make_url(db_url).get_backend_name())
    rng = random.Random(plan.seed)
    clock = time.monotonic()
    token = uuid.uuid4().hex[:8]
    await asyncio.to_thread(
        dovecot.append_many,
        ACCOUNT,
        INBOX,
        (make_letter(i, plan, token) for i in range(plan.letters)),
    )
    report.seconds["seeding"] = time.monotonic() - clock
    say(f"seeded {plan.letters} letters in {report.seconds['seeding']:.1f} s")
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    daemon = DaemonProcess(write_config(workdir, db_url, dovecot, sink.port, plan), logs)
    engine = reader(db_url)
    try:
        start = time.monotonic()
        await _kill_phase(daemon, engine, sink, plan, rng, report, start, say)
        report.seconds["kills"] = time.monotonic() - start
        last = time.monotonic()
        report.final_exit = await _final_run(daemon, engine, plan, report)
        report.final_pid = daemon.pid
        report.seconds["last run"] = time.monotonic() - last
        report.seconds["total"] = time.monotonic() - start
        await check(report, engine, dovecot, sink, plan, token)
        report.error_lines = daemon.error_lines()
    finally:
        if daemon.process is not None:
            daemon.kill()
        await engine.dispose()
    return report


async def _kill_phase(
    daemon: DaemonProcess,
    engine: AsyncEngine,
    sink: SmtpSink,
    plan: Plan,
    rng: random.Random,
    report: Report,
    start: float,
    say: Callable[[str], None],
) -> None:
    """Start the daemon and kill it at each target point of the work, drawn at random."""
    work = plan.letters + plan.effects
    targets = sorted(rng.uniform(0, work) for _ in range(plan.kills))
    stall = 3 * plan.lease_seconds + 10
    for number, target in enumerate(targets, 1):
        daemon.start()
        deadline = time.monotonic() + stall
        while time.monotonic() < deadline and daemon.exited() is None:
            if sum(await progress(engine)) >= target:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0, plan.jitter_seconds))
        code = daemon.exited()
        if code is not None:
            report.problems.append(f"start {daemon.starts}: the daemon exited by itself ({code})")
            daemon.process = None
            continue
        letters, effects = await progress(engine)
        leftovers = daemon.kill()
        report.leftovers += leftovers
        at = time.monotonic() - start
        report.kills.append(Kill(number, at, letters, effects, leftovers, len(sink.messages)))
        say(f"kill {number}: {letters} letters stored, {effects} effects done")


async def _final_run(daemon: DaemonProcess, engine: AsyncEngine, plan: Plan, report: Report) -> int:
    """Start the daemon once more, wait until all is done (or a generous time), stop it."""
    daemon.start()
    deadline = time.monotonic() + plan.finish_seconds
    while not (daemon.started() and await finished(engine, plan)):
        if time.monotonic() > deadline:
            report.problems.append(f"the last run did not finish within {plan.finish_seconds} s")
            break
        if daemon.exited() is not None:
            report.problems.append(f"the last run exited by itself ({daemon.exited()})")
            daemon.process = None
            return -1
        await asyncio.sleep(0.1)
    return daemon.stop()


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


async def check(
    report: Report,
    engine: AsyncEngine,
    dovecot: DovecotServer,
    sink: SmtpSink,
    plan: Plan,
    token: str,
) -> None:
    """Run every check and record its figures and problems in the report."""
    async with engine.connect() as conn:
        inbox = (await conn.execute(select(Folder).where(Folder.name == INBOX))).one()
        letters = (
            await conn.execute(
                select(Letter.uid, Letter.message_id, Letter.status).where(
                    Letter.folder_id == inbox.id, Letter.direction == "in"
                )
            )
        ).all()
        rows = (
            await conn.execute(
                select(
                    OutboxItem.kind, OutboxItem.status, OutboxItem.locked_until, OutboxItem.attempts
                )
            )
        ).all()
        replies = (
            await conn.execute(
                select(Letter.uidvalidity)
                .join(Folder, Folder.id == Letter.folder_id)
                .where(Folder.name == SENT, Letter.direction == "out")
            )
        ).all()
    _check_letters(report, letters, plan, token)
    _check_cursor(report, inbox, [uid for uid, _, _ in letters], dovecot)
    _check_lease(report, inbox.lease_owner)
    _check_outbox(report, rows, plan)
    _check_sent(report, sink.messages, plan)
    _check_filed(report, [v for (v,) in replies], len(dovecot.uids(ACCOUNT, SENT)))
    if report.leftovers:
        report.problems.append(
            f"{report.leftovers} processes (parser workers) outlived their killed daemon"
        )
    if report.final_exit != 0:
        report.problems.append(f"the last run, stopped with SIGTERM, exited {report.final_exit}")


def _check_letters(report: Report, letters: Sequence[Any], plan: Plan, token: str) -> None:
    """Every letter stored exactly once (by Message-ID), none failed."""
    seen = Counter(message_id for _, message_id, _ in letters)
    wanted = {f"<k9-{i}-{token}@client.example>" for i in range(plan.letters)}
    report.letters_stored = len(letters)
    report.letters_doubled = sum(n - 1 for n in seen.values() if n > 1)
    report.letters_missing = len(wanted - set(seen))
    report.letters_failed = sum(1 for _, _, status in letters if status != "stored")
    if report.letters_doubled or report.letters_missing or report.letters_failed:
        report.problems.append(
            f"letters: {report.letters_doubled} doubled, {report.letters_missing} missing, "
            f"{report.letters_failed} not stored whole"
        )
    if set(seen) - wanted:
        report.problems.append(f"letters: {len(set(seen) - wanted)} that were never seeded")


def _check_cursor(report: Report, inbox: Any, uids: list[int], dovecot: DovecotServer) -> None:
    """The folder's cursor: the server's UIDVALIDITY, last_uid the largest UID stored."""
    server = dovecot.uidvalidity(ACCOUNT, INBOX)
    top = max(uids, default=0)
    server_top = max(dovecot.uids(ACCOUNT, INBOX), default=0)
    report.cursor = (
        f"uidvalidity {inbox.uidvalidity} (server {server}), last_uid {inbox.last_uid}, "
        f"largest UID stored {top} (server {server_top})"
    )
    if inbox.uidvalidity != server or inbox.last_uid != top or top != server_top:
        report.problems.append(f"cursor: {report.cursor}")


def _check_lease(report: Report, owner: str | None) -> None:
    """The last run, stopped normally, gave the folder's lease back.

    A killed start's lease may still be on the row: nobody takes it over before it runs out,
    and the last run may have finished the work before it did. Owners are HOST:PID:TOKEN.
    """
    report.lease = "free" if owner is None else f"held by {owner}"
    if owner is not None and owner.split(":")[-2] == str(report.final_pid):
        report.problems.append("the last run, stopped with SIGTERM, kept the folder's lease")


def _check_outbox(report: Report, rows: Sequence[Any], plan: Plan) -> None:
    """One row per expected effect, every one done, none left leased."""
    report.outbox = dict(Counter(status for _, status, _, _ in rows))
    kinds = Counter(kind for kind, _, _, _ in rows)
    report.retried_rows = sum(1 for *_, attempts in rows if attempts > 1)
    report.stuck_rows = sum(
        1 for _, status, locked, _ in rows if status != "done" or locked is not None
    )
    if report.stuck_rows:
        report.problems.append(f"outbox: {report.stuck_rows} rows not done or still leased")
    wanted = {"forward": len(plan.tagged), "autoreply": plan.sender_count}
    if dict(kinds) != wanted:
        report.problems.append(f"outbox rows by kind {dict(kinds)}, expected {wanted}")


def _check_sent(report: Report, messages: list[ReceivedMail], plan: Plan) -> None:
    """Each forward and auto-reply reached the relay once, or twice at most after a kill.

    A duplicate must come over another SMTP connection than the first send: one daemon keeps
    one connection, so a resend over the same one would be a resend without a kill.
    """
    forwards: dict[Any, list[tuple[int, str]]] = defaultdict(list)
    replies: dict[Any, list[tuple[int, str]]] = defaultdict(list)
    unexpected = 0
    for index, mail in enumerate(messages):
        if mail.mail_from == "" and len(mail.rcpt_tos) == 1:
            replies[mail.rcpt_tos[0]].append((index, mail.peer))
        elif mail.mail_from == ADDRESS and mail.rcpt_tos == (DESK,):
            forwards[_forwarded_number(mail.content)].append((index, mail.peer))
        else:
            unexpected += 1
    report.forwards = _tally(forwards, set(plan.tagged))
    report.replies = _tally(replies, {sender(i, plan.sender_count) for i in range(plan.letters)})
    report.replies.unexpected += unexpected
    for name, tally in (("forwards", report.forwards), ("auto-replies", report.replies)):
        if tally.missing or tally.over_twice or tally.unexpected or tally.one_connection:
            report.problems.append(
                f"{name}: {tally.missing} never sent, {tally.over_twice} sent three times or "
                f"more, {tally.one_connection} sent twice by one daemon, "
                f"{tally.unexpected} unexpected"
            )


def _forwarded_number(content: bytes) -> int:
    """Give the number of the letter a forward carries, from its subject (-1 if none)."""
    subject = str(email.message_from_bytes(content, policy=email.policy.default)["Subject"])
    match = _NUMBER.search(subject)
    return int(match.group(1)) if match else -1


def _tally(sent: dict[Any, list[tuple[int, str]]], wanted: set[Any]) -> Tally:
    """Compare what the relay received (message index, connection) with what was wanted."""
    counts = {key: len(copies) for key, copies in sent.items()}
    return Tally(
        expected=len(wanted),
        sent=sum(counts.get(key, 0) for key in wanted),
        duplicates=sum(counts[key] - 1 for key in wanted if counts.get(key, 0) > 1),
        missing=sum(1 for key in wanted if key not in counts),
        over_twice=sum(1 for key in wanted if counts.get(key, 0) > 2),
        unexpected=sum(n for key, n in counts.items() if key not in wanted),
        one_connection=sum(
            1 for copies in sent.values() if len({peer for _, peer in copies}) < len(copies)
        ),
        twice={key: copies for key, copies in sent.items() if len(copies) > 1},
    )


def _check_filed(report: Report, uidvalidities: list[int], copies: int) -> None:
    """Every auto-reply stored once as an outgoing letter, filed, and APPENDed to Sent once."""
    report.replies_stored = len(uidvalidities)
    report.sent_copies = copies
    unfiled = sum(1 for value in uidvalidities if value == 0)
    if report.replies_stored != report.replies.expected or copies != report.replies_stored:
        report.problems.append(
            f"Sent: {report.replies_stored} replies stored, {copies} copies in Sent, "
            f"{report.replies.expected} expected"
        )
    if unfiled:
        report.problems.append(f"Sent: {unfiled} stored replies never got their UID in Sent")


# --------------------------------------------------------------------------------------------
# By hand
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _database(kind: str, pg_url: str, workdir: Path, *, keep: bool) -> Iterator[str]:
    """Give a fresh database URL: a SQLite file in the work directory, or a throwaway PG database."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'maild.db'}"
        return
    name = f"maild_k9_{uuid.uuid4().hex[:10]}"
    asyncio.run(pg_admin(pg_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"database kept: {name}")
        else:
            asyncio.run(pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.kill9", description=__doc__)
    parser.add_argument("--letters", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--senders", type=int, default=400)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("MAILD_TEST_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--seed", type=int, default=None, help="repeat a run's kill points")
    parser.add_argument(
        "--lease", type=float, default=2.0, help="outbox.lease_seconds and daemon.lease_seconds"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory and the PostgreSQL database"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run once by hand and print the summary; exit 1 when a check failed."""
    args = _arguments(argv)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    plan = Plan(args.letters, args.kills, args.senders, seed, lease_seconds=args.lease)
    workdir = Path(tempfile.mkdtemp(prefix="maild-kill9-"))
    dovecot = DovecotServer(workdir / "dovecot", {ACCOUNT: "support-pw"})
    try:
        with (
            _database(args.db, args.pg_url, workdir, keep=args.keep) as db_url,
            dovecot,
            SmtpSink() as sink,
        ):
            report = asyncio.run(run_kill9(dovecot, sink, db_url, workdir, plan, say=print))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report.summary())
    print(f"work directory: {workdir}" + ("" if args.keep else " (removed; --keep keeps it)"))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
