"""`maild demo`: a throwaway Dovecot with sample letters, maild run on SQLite, and a readable summary."""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from maild.db.engine import create_engine, session_factory
from maild.db.tables import (
    Account,
    Attachment,
    Folder,
    Letter,
    OutboxItem,
    PotentialClient,
    RuleHit,
)
from maild.dryrun.report import shorten
from maild.errors import MaildError
from maild.leads.service import leads_in_scenario
from maild.runtime import Daemon, RunResult
from maild.settings import load_config
from maild.testing.dovecot import DovecotServer, find_dovecot
from maild.testing.samples import SALES, SUPPORT, demo_mailboxes, letter, message_id
from maild.testing.smtp import SmtpSink

CONFIG_TEMPLATE = """\
# Written by `maild demo`: two accounts on a throwaway local Dovecot.
[database]
url = "sqlite+aiosqlite:///{db}"

[daemon]
health_listen = ""
first_sync = "process"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"

[outbox]
retry_base_seconds = 1

[[accounts]]
name = "sales"
address = "{sales}"
display_name = "Corp Sales"
  [accounts.imap]
  host = "127.0.0.1"
  port = {port}
  security = "none"
  username = "sales"
  password_file = "{sales_pw}"
  [accounts.folders]
  watch = ["INBOX", "Leads/Web"]
  [accounts.leads]
  source = "selected"          # only letters in Leads/Web are leads
  folders = ["Leads/Web"]

[[accounts]]
name = "support"
address = "{support}"
display_name = "Corp Support"
  [accounts.imap]
  host = "127.0.0.1"
  port = {port}
  security = "none"
  username = "support"
  password_file = "{support_pw}"
  [accounts.leads]
  source = "all"               # every letter to support@ is a lead (robots aside)
  [accounts.autoreply]         # on holiday: one reply per sender per 3 days, never to robots
  enabled = true
  start = {autoreply_start}
  end = {autoreply_end}
  text = "Thank you for writing. Our support team is on holiday; we answer from Monday."

[[scenarios]]
name = "sales"
title = "My sales"
leads_from = {{ sales = ["Leads/Web"] }}

[[scenarios]]
name = "support"
title = "Support"
leads_from = {{ support = ["INBOX"] }}

# Users of the shared accounts: replies addressed to a personal sender name go to its user.
[[users]]
login = "m.ivanova"
full_name = "Maria Ivanova"
sender_names = {{ sales = "Мария Иванова" }}

# Sorting rules: tried in order on every new letter; `maild rules test` tries them on a file.
[[rules]]
name = "invoices to accounting"
accounts = ["sales"]
match = {{ header = "subject", contains = ["invoice", "счёт"] }}
actions = [ {{ forward = {{ to = "accounting@corp.example" }} }},
            {{ add_flag = "$Invoice" }},
            {{ set_responsible = "m.ivanova" }},
            {{ move = "Invoices" }} ]
stop = true

[[rules]]
name = "damage claims"
accounts = ["support"]
match = {{ all = [ {{ body = "text", contains = "damaged" }}, {{ has_attachment = true }} ] }}
actions = [ {{ add_flag = "flagged" }}, {{ copy = "Claims" }} ]

[[rules]]
name = "no auto-reply to partners"
accounts = ["support"]
match = {{ header = "from", contains = "@shenzhen-supply.example" }}
actions = [ {{ autoreply = false }} ]

[[rules]]
name = "newsletters to the bin"
match = {{ header = "list-id", exists = true }}
actions = [ {{ move = "Trash" }} ]
"""


@contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    """Use the given directory, or a temp one removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve()
        return
    tmp = Path(tempfile.mkdtemp(prefix="maild-demo-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_config(workdir: Path, port: int, smtp_port: int, passwords: dict[str, str]) -> Path:
    """Write the demo config with passwords in 0600 files, as an admin would."""
    now = datetime.now(UTC).replace(microsecond=0)
    files = {}
    for user, password in passwords.items():
        secret = workdir / f"{user}.password"
        secret.write_text(password + "\n", encoding="utf-8")
        secret.chmod(0o600)
        files[user] = secret
    config = workdir / "maild.toml"
    config.write_text(
        CONFIG_TEMPLATE.format(
            db=workdir / "maild.db",
            port=port,
            smtp_port=smtp_port,
            sales=SALES,
            support=SUPPORT,
            sales_pw=files["sales"],
            support_pw=files["support"],
            autoreply_start=(now - timedelta(days=1)).isoformat(timespec="seconds"),
            autoreply_end=(now + timedelta(days=7)).isoformat(timespec="seconds"),
        ),
        encoding="utf-8",
    )
    return config


def run_demo(workdir: Path | None = None) -> str:
    """Run the whole demo and give the summary text."""
    if find_dovecot() is None:
        raise MaildError(
            "Dovecot is not installed; install it with `apt-get install -y dovecot-imapd` "
            "(scripts/demo.sh does this for you)"
        )
    with _workdir(workdir) as root:
        passwords = {"sales": secrets.token_urlsafe(12), "support": secrets.token_urlsafe(12)}
        server = DovecotServer(root / "dovecot", users=passwords)
        server.start()
        try:
            with SmtpSink() as relay:
                summary = _demo(root, server, relay, passwords)
        finally:
            server.close()
        if workdir is None:
            return summary + "\n\n(the demo's files were removed; keep them with --workdir DIR)"
        return (
            summary
            + f"\n\nConfig, database and server log kept in {root}; try:\n"
            + (f"  maild check-config -c {root / 'maild.toml'}")
        )


def _demo(root: Path, server: DovecotServer, relay: SmtpSink, passwords: dict[str, str]) -> str:
    """Seed, run three times (first sync, a repeat, two new letters), and summarise."""
    mailboxes = demo_mailboxes()
    for (user, folder), raws in mailboxes.items():
        if folder != "INBOX":
            server.create_folder(user, folder)
        server.append_many(user, folder, raws)
    config = load_config(_write_config(root, server.port, relay.port, passwords))
    lines = [
        f"maild demo: Dovecot on 127.0.0.1:{server.port}, an SMTP relay on 127.0.0.1:"
        f"{relay.port}, database {root / 'maild.db'}, {len(config.rules)} sorting rules",
        "",
    ]
    seeded = sum(len(v) for v in mailboxes.values())
    lines.append(f"1. Seeded {seeded} sample letters in 3 folders of 2 accounts; maild run --once:")
    first, seconds = _run_once(config)
    lines += _report(first, seconds)
    if any(state.failed for state in first.status.folders.values()):
        lines.append(
            "   (a sample nested too deep to parse, on purpose: maild kept it raw as failed, "
            "and the warning printed above is its log line)"
        )
    lines.append("")
    lines.append("2. Ran again with nothing new (every letter is stored exactly once):")
    again, seconds = _run_once(config)
    lines += _report(again, seconds)
    server.append(
        "support",
        "INBOX",
        letter(
            sender=("Mei Chen", "mei.chen@shenzhen-supply.example"),
            to=SUPPORT,
            index=9,
            subject="Re: Tracking number?",
            body="Found it, thank you!",
            return_path="mei.chen@shenzhen-supply.example",
            in_reply_to=message_id(mailboxes[("support", "INBOX")][1]),
        ),
    )
    server.append("support", "INBOX", NEWSLETTER)
    server.append("sales", "Leads/Web", SIGNED_REQUEST)
    lines.append("")
    lines.append(
        "3. Three new letters arrived (a reply and a newsletter at support@, a request in "
        "sales' Leads/Web); ran again:"
    )
    third, seconds = _run_once(config)
    lines += _report(third, seconds)
    lines.append("")
    lines += asyncio.run(_database_summary(config.database_url()))
    lines.append("")
    lines += asyncio.run(_rules_summary(config.database_url()))
    lines.append("")
    lines += asyncio.run(_leads_summary(config.database_url(), [s.name for s in config.scenarios]))
    lines.append("")
    lines += asyncio.run(_autoreply_summary(config.database_url()))
    lines.append("")
    lines += _mailbox_summary(server, relay)
    lines.append("")
    return "\n".join(lines)


NEWSLETTER = (
    b"Return-Path: <bounces@logistics-weekly.example>\r\n"
    b"From: Logistics Weekly <news@logistics-weekly.example>\r\n"
    b"To: support@corp.example\r\n"
    b"Subject: This week in logistics\r\n"
    b"Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n"
    b"Message-ID: <weekly-48@logistics-weekly.example>\r\n"
    b"List-Id: Logistics Weekly <weekly.logistics-weekly.example>\r\n"
    b"List-Unsubscribe: <mailto:leave@logistics-weekly.example>\r\n"
    b"Precedence: list\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Ten stories about pallets.\r\n"
)


SIGNED_REQUEST = letter(
    sender=("Иван Сидоров", "ivan@stroy-torg.example"),
    to=SALES,
    to_name="Мария Иванова",
    index=10,
    subject="Запрос цены: 40 поддонов",
    body="Добрый день!\n\nПришлите цену на 40 поддонов с доставкой.\n\n--\nИван Сидоров\n"
    "ООО «СтройТорг»\nТел.: +7 495 123-45-67\n",
)


def _run_once(config: object) -> tuple[RunResult, float]:
    """Run the daemon once over every folder and time it."""
    started = time.monotonic()
    result = asyncio.run(Daemon(config).run(once=True))  # type: ignore[arg-type]
    return result, time.monotonic() - started


def _report(result: RunResult, seconds: float) -> list[str]:
    """Describe one run per folder."""
    out = []
    for (account, folder), state in sorted(result.status.folders.items()):
        out.append(
            f"   {account:<8} {folder:<10} stored {state.stored:>2}  kept raw as failed "
            f"{state.failed}  already stored {state.duplicates}"
            + (f"  ERROR {state.last_error}" if state.last_error else "")
        )
    outbox = result.outbox
    if outbox is not None and (outbox.done or outbox.retried or outbox.dead):
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(outbox.kinds.items()))
        out.append(
            f"   effects performed: {outbox.done} ({kinds}); to retry {outbox.retried}; "
            f"dead {outbox.dead}"
        )
    out.append(f"   {'ok' if result.ok else 'NOT OK'} in {seconds:.1f} s")
    return out


async def _rules_summary(url: str) -> list[str]:
    """List which rules matched which letters and what became of each effect."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            hits = await session.execute(
                select(RuleHit.rule, Letter.subject, Letter.responsible_login)
                .join(Letter, Letter.id == RuleHit.letter_id)
                .order_by(RuleHit.id)
            )
            out = ["Rules that fired (table rule_hits), and the Responsible they set:"]
            for rule, subject, responsible in hits:
                who = f"  -> responsible {responsible}" if responsible else ""
                out.append(f"   {_cell(rule, 26)} {_cell(subject or '(no subject)', 44)}{who}")
            items = await session.execute(
                select(OutboxItem.kind, OutboxItem.target, OutboxItem.status, Letter.subject)
                .join(Letter, Letter.id == OutboxItem.letter_id)
                .order_by(OutboxItem.id)
            )
            out.append("")
            out.append("Their effects (table outbox), performed by the dispatcher:")
            for kind, target, status, subject in items:
                out.append(f"   {status:<5} {kind:<9} {_cell(target, 26)} {shorten(subject, 40)}")
            deleted = await session.execute(
                select(Letter.subject).where(Letter.marked_for_deletion.is_(True))
            )
            for (subject,) in deleted:
                out.append(f"   marked for deletion in the database: {subject}")
    finally:
        await engine.dispose()
    return out


def _mailbox_summary(server: DovecotServer, relay: SmtpSink) -> list[str]:
    """Show the mailboxes and the relay as a mail admin would check them."""
    out = ["What the mail server and the relay now show:"]
    for user, folder in (("sales", "Invoices"), ("support", "Claims"), ("support", "Trash")):
        uids = server.uids(user, folder)
        flags = sorted(
            {flag for uid in uids for flag in server.flags(user, folder, uid)} - {"\\Recent"}
        )
        out.append(
            f"   {user}/{folder}: {len(uids)} letter(s)"
            + (f", flags {' '.join(flags)}" if flags else "")
        )
    for mail in relay.messages:
        msg = email.message_from_bytes(mail.content, policy=email.policy.default)
        kind = "an auto-reply" if msg["Auto-Submitted"] == "auto-replied" else "a forward"
        sender = f" (MAIL FROM:<{mail.mail_from}>)" if kind == "an auto-reply" else ""
        out.append(f"   relay got {kind} to {', '.join(mail.rcpt_tos)}{sender}: {msg['Subject']}")
    return out


async def _autoreply_summary(url: str) -> list[str]:
    """Show what the autoresponder decided for each letter of support@, and the replies sent."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            rows = await session.execute(
                select(Letter.subject, Letter.autoreply_outcome)
                .where(Letter.autoreply_outcome != "")
                .order_by(Letter.id)
            )
            out = ["Auto-replies (support@ is on holiday; letters.autoreply_outcome):"]
            for subject, outcome in rows:
                out.append(f"   {_cell(subject or '(no subject)', 34)} {outcome}")
            sent = await session.execute(
                select(func.count())
                .select_from(OutboxItem)
                .where(OutboxItem.kind == "autoreply", OutboxItem.status == "done")
            )
            out.append(f"   auto-replies sent: {sent.scalar_one()}, each stored as outgoing")
    finally:
        await engine.dispose()
    return out


async def _leads_summary(url: str, scenarios: list[str]) -> list[str]:
    """Show the leads each scenario shows, with their senders' parties, and why others are not leads."""
    engine = create_engine(url)
    try:
        sessions = session_factory(engine)
        out = ["Leads found (table leads), as each scenario shows them:"]
        for scenario in scenarios:
            rows = await leads_in_scenario(sessions, scenario)
            out.append(f"   scenario {scenario}: {len(rows)} lead(s)")
            for row in rows:
                who = f", responsible {row.responsible_login}" if row.responsible_login else ""
                out.append(
                    f"     #{row.number:<3} {row.status:<4} {_cell(f'{row.account}/{row.folder}', 16)} "
                    f"{_cell(row.subject, 38)} {row.letters} letter(s); {row.reason}{who}"
                )
        async with sessions() as session:
            parties = await session.execute(
                select(
                    PotentialClient.full_name, PotentialClient.company, PotentialClient.email
                ).order_by(PotentialClient.id)
            )
            out.append("   potential clients created from unknown senders:")
            for name, company, address in parties:
                out.append(f"     {name or '(no name)'}, {company or '(no company)'} <{address}>")
            others = await session.execute(
                select(Letter.subject, Letter.lead_reason)
                .where(Letter.lead_reason != "", Letter.lead_id.is_(None))
                .order_by(Letter.id)
            )
            out.append("   letters that are no lead, and why:")
            for subject, reason in others:
                out.append(f"     {_cell(subject or '(no subject)', 40)} {reason}")
            joined = await session.execute(
                select(Letter.subject, Letter.lead_reason)
                .where(Letter.lead_reason.like("reply to lead%"))
                .order_by(Letter.id)
            )
            for subject, reason in joined:
                out.append(f"   joined a thread: {shorten(subject, 40)}: {reason}")
            named = await session.execute(
                select(Letter.subject, Letter.responsible_login, Letter.responsible_reason)
                .where(Letter.responsible_reason.like("personal sender name%"))
                .order_by(Letter.id)
            )
            for subject, login, reason in named:
                out.append(f"   Responsible {login} for {shorten(subject, 40)}: {reason}")
    finally:
        await engine.dispose()
    return out


async def _database_summary(url: str) -> list[str]:
    """List what the database now holds, as the CRM would see it."""
    engine = create_engine(url)
    try:
        sessions = session_factory(engine)
        async with sessions() as session:
            rows = await session.execute(
                select(
                    Account.name,
                    Folder.name,
                    Letter.uid,
                    Letter.status,
                    Letter.from_name,
                    Letter.from_address,
                    Letter.subject,
                    Letter.error,
                    Letter.size,
                    Letter.defects,
                    func.count(Attachment.id),
                )
                .join(Folder, Folder.id == Letter.folder_id)
                .join(Account, Account.id == Letter.account_id)
                .outerjoin(Attachment, Attachment.letter_id == Letter.id)
                .group_by(Letter.id, Account.name, Folder.name)
                .order_by(Account.name, Folder.name, Letter.uid)
            )
            out = ["The letters table now holds:"]
            for (
                account,
                folder,
                uid,
                status,
                name,
                address,
                subject,
                error,
                size,
                defects,
                n,
            ) in rows:
                sender = f"{name} <{address}>" if name else (address or "(no sender)")
                line = (
                    f"   {_cell(f'{account}/{folder}', 16)} uid {uid:<2} {status:<8} {size:>6} B  "
                    f"{_cell(sender, 42)}  {shorten(subject or '(no subject)', 40)}"
                )
                if n:
                    line += f"  [{n} attachment{'s' if n > 1 else ''}]"
                out.append(line)
                if error:
                    out.append(f"        reason: {shorten(error, 110)}")
                if defects:
                    out.append(
                        f"        stored with {len(defects)} parse defect(s): {shorten(defects[0], 90)}"
                    )
    finally:
        await engine.dispose()
    return out


def _cell(text: str, width: int) -> str:
    """Give text as a column of a width: shortened with an ellipsis, or padded."""
    return f"{shorten(text, width):<{width}}"
