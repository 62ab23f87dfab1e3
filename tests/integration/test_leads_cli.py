"""`maild leads list`, `maild leads reject` and `maild sender` on a real SQLite database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from maild.cli import main
from maild.db import migrate
from maild.db.engine import create_engine, session_factory
from tests.integration.test_leads import Mailbox, mail, make_config

CONFIG = """
[database]
url = "sqlite+aiosqlite:///{db}"

[[accounts]]
name = "sales"
address = "sales@corp.example"
aliases = ["orders@corp.example"]
  [accounts.imap]
  host = "127.0.0.1"
  security = "none"
  username = "u"
  password_env = "UNUSED"
  [accounts.folders]
  watch = ["INBOX", "Leads/Web", "Leads/Partners", "Sent"]
  [accounts.leads]
  source = "selected"
  folders = ["Leads/Web", "Leads/Partners"]

[[accounts]]
name = "support"
address = "support@corp.example"
  [accounts.imap]
  host = "127.0.0.1"
  security = "none"
  username = "u"
  password_env = "UNUSED"
  [accounts.leads]
  source = "all"

[[scenarios]]
name = "sales"
title = "My sales"
leads_from = {{ sales = ["Leads/Web"] }}

[[scenarios]]
name = "support"
leads_from = {{ support = ["INBOX"], sales = ["Leads/Partners"] }}
"""


def seed(db: Path) -> None:
    """Store a web lead, a reply to it, and a partner lead, as the daemon would."""

    async def run() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            await migrate.upgrade(engine)
            box = await Mailbox(session_factory(engine), make_config()).open()
            first = await box.put(mail("Quote for pallets", sender="Ivan <ivan@client.example>"))
            await box.put(
                mail("Re: Quote", sender="ivan@client.example", in_reply_to=first.message_id)
            )
            await box.put(mail("Partner deal", sender="p@partner.example"), folder="Leads/Partners")
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_leads_cli(tmp_path: Path) -> None:
    """Leads are listed per scenario, rejected with the rejecting user, and a sender's letters shown."""
    db = tmp_path / "maild.db"
    config = tmp_path / "maild.toml"
    config.write_text(CONFIG.format(db=db), encoding="utf-8")
    seed(db)
    runner = CliRunner()
    listed = runner.invoke(main, ["leads", "list", "-c", str(config), "--scenario", "sales"])
    assert listed.exit_code == 0, listed.output
    assert "#1" in listed.output and "Quote for pallets" in listed.output
    assert "2 letters" in listed.output and "Partner deal" not in listed.output
    support = runner.invoke(main, ["leads", "list", "-c", str(config), "--scenario", "support"])
    assert "Partner deal" in support.output and "Quote for pallets" not in support.output

    wrong = runner.invoke(
        main, ["leads", "reject", "1", "-c", str(config), "--by", "anna", "--scenario", "support"]
    )
    assert wrong.exit_code == 1
    assert "lead #1 is not shown in scenario support" in wrong.output
    done = runner.invoke(
        main, ["leads", "reject", "1", "-c", str(config), "--by", "anna", "--scenario", "sales"]
    )
    assert done.exit_code == 0, done.output
    assert "rejected by anna in scenario sales (was new); responsible is now anna" in done.output
    new_only = runner.invoke(
        main, ["leads", "list", "-c", str(config), "--scenario", "sales", "--status", "new"]
    )
    assert "no leads with status new" in new_only.output
    unknown = runner.invoke(main, ["leads", "list", "-c", str(config), "--scenario", "nope"])
    assert unknown.exit_code == 1 and 'no scenario is named "nope"' in unknown.output

    sender = runner.invoke(main, ["sender", "-c", str(config), "Ivan@Client.example"])
    assert sender.exit_code == 0, sender.output
    assert "ivan@client.example: potential client #1 Ivan" in sender.output
    assert sender.output.count("[lead #1]") == 2
    nobody = runner.invoke(main, ["sender", "-c", str(config), "ghost@x.example"])
    assert "no contact person, client or potential client" in nobody.output
    assert "no letters" in nobody.output


def test_leads_cli_never_creates_a_database(tmp_path: Path) -> None:
    """Listing leads against a database file that does not exist says so and creates nothing."""
    db = tmp_path / "missing.db"
    config = tmp_path / "maild.toml"
    config.write_text(CONFIG.format(db=db), encoding="utf-8")
    result = CliRunner().invoke(main, ["leads", "list", "-c", str(config), "--scenario", "sales"])
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not db.exists()
