"""`maild demo`: a throwaway Dovecot with sample letters, maild run on SQLite, and a readable summary."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select

from maild.db.engine import create_engine, session_factory
from maild.db.tables import Account, Attachment, Folder, Letter
from maild.errors import MaildError
from maild.runtime import Daemon, RunResult
from maild.settings import load_config
from maild.testing.dovecot import DovecotServer, find_dovecot
from maild.testing.samples import SALES, SUPPORT, demo_mailboxes, letter

CONFIG_TEMPLATE = """\
# Written by `maild demo`: two accounts on a throwaway local Dovecot.
[database]
url = "sqlite+aiosqlite:///{db}"

[daemon]
health_listen = ""
first_sync = "process"

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


def _write_config(workdir: Path, port: int, passwords: dict[str, str]) -> Path:
    """Write the demo config with passwords in 0600 files, as an admin would."""
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
            sales=SALES,
            support=SUPPORT,
            sales_pw=files["sales"],
            support_pw=files["support"],
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
            summary = _demo(root, server, passwords)
        finally:
            server.close()
        if workdir is None:
            return summary + "\n\n(the demo's files were removed; keep them with --workdir DIR)"
        return (
            summary
            + f"\n\nConfig, database and server log kept in {root}; try:\n"
            + (f"  maild check-config -c {root / 'maild.toml'}")
        )


def _demo(root: Path, server: DovecotServer, passwords: dict[str, str]) -> str:
    """Seed, run three times (first sync, a repeat, one new letter), and summarise."""
    mailboxes = demo_mailboxes()
    for (user, folder), raws in mailboxes.items():
        if folder != "INBOX":
            server.create_folder(user, folder)
        server.append_many(user, folder, raws)
    config = load_config(_write_config(root, server.port, passwords))
    lines = [f"maild demo: Dovecot on 127.0.0.1:{server.port}, database {root / 'maild.db'}", ""]
    seeded = sum(len(v) for v in mailboxes.values())
    lines.append(f"1. Seeded {seeded} sample letters in 3 folders of 2 accounts; maild run --once:")
    first, seconds = _run_once(config)
    lines += _report(first, seconds)
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
        ),
    )
    lines.append("")
    lines.append("3. One new letter arrived at support@; ran again:")
    third, seconds = _run_once(config)
    lines += _report(third, seconds)
    lines.append("")
    lines += asyncio.run(_database_summary(config.database_url()))
    lines.append("")
    return "\n".join(lines)


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
    out.append(f"   {'ok' if result.ok else 'NOT OK'} in {seconds:.1f} s")
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
                    f"   {account}/{folder} uid {uid:<2} {status:<7} {size:>6} B  "
                    f"{sender[:40]:<40}  {subject[:40] or '(no subject)'}"
                )
                if n:
                    line += f"  [{n} attachment{'s' if n > 1 else ''}]"
                out.append(line)
                if error:
                    out.append(f"        reason: {error[:100]}")
                if defects:
                    out.append(
                        f"        flagged, {len(defects)} parse defect(s): {defects[0][:90]}"
                    )
    finally:
        await engine.dispose()
    return out
