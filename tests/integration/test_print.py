"""`maild letters print`: letters read back for printing on both databases, and the command itself."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.cli import main
from maild.db import migrate
from maild.db.engine import create_engine, session_factory
from maild.errors import PrintError
from maild.printing.render import render_document
from maild.printing.service import load_letters
from tests.integration.test_leads import Mailbox, make_config
from tests.integration.test_leads_cli import CONFIG


def rich_letter() -> bytes:
    """A letter with text and hostile HTML alternatives and a Cyrillic-named attachment."""
    msg = EmailMessage()
    msg["From"] = "Иван Петров <ivan@client.example>"
    msg["To"] = "Отдел продаж <sales@corp.example>"
    msg["Cc"] = "boss@corp.example"
    msg["Subject"] = "Счёт <script>alert(1)</script>"
    msg["Date"] = "Mon, 12 Jan 2026 12:30:00 +0300"
    msg["Message-ID"] = "<print-1@test.example>"
    msg.set_content("Добрый день! Пришлите счёт.\n")
    msg.add_alternative(
        '<p onclick="steal()">Добрый день! <b>Пришлите счёт.</b></p>'
        '<script>alert(1)</script><img src="https://tracker.test/p.gif">'
        '<form action="https://phish.test/"><input name="password"></form>',
        subtype="html",
    )
    msg.add_attachment(
        b"%PDF-1.4 fake" * 100, maintype="application", subtype="pdf", filename="счёт.pdf"
    )
    return msg.as_bytes()


def plain_letter(subject: str) -> bytes:
    """A plain-text letter without attachments."""
    msg = EmailMessage()
    msg["From"] = "anna@partner.example"
    msg["To"] = "sales@corp.example"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@test.example>"
    msg.set_content("Line one.\nLine <two> & three.\n")
    return msg.as_bytes()


async def seed(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """Store the rich letter and a plain one as the daemon would, and give their ids."""
    box = await Mailbox(sessions, make_config()).open()
    first = await box.put(rich_letter(), folder="INBOX")
    second = await box.put(plain_letter("Partner deal"), folder="Leads/Partners")
    return [first.id, second.id]


async def test_letters_read_back_for_printing(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Letters come back in the order asked, with headers, bodies, place and attachments."""
    first, second = await seed(sessions)
    letters = await load_letters(sessions, [second, first, second])
    assert [item.id for item in letters] == [second, first]
    plain, rich = letters
    assert (rich.account, rich.folder, plain.folder) == ("sales", "INBOX", "Leads/Partners")
    assert rich.sender is not None and rich.sender.name == "Иван Петров"
    assert [a.address for a in rich.to] == ["sales@corp.example"]
    assert [a.address for a in rich.cc] == ["boss@corp.example"]
    assert rich.sent_at is not None and rich.sent_at.hour == 9
    assert "<script>" in rich.subject and "onclick" in rich.html
    assert [(a.filename, a.content_type) for a in rich.attachments] == [
        ("счёт.pdf", "application/pdf")
    ]
    assert rich.attachments[0].size == 1300
    assert plain.attachments == () and plain.html == ""

    page = render_document(letters).split("<body>", 1)[1]
    assert page.count('<section class="letter"') == 2
    assert "Счёт &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>Пришлите счёт.</b>" in page
    for gone in ("<script", "onclick", "tracker.test", "phish.test", "<form", "<input"):
        assert gone not in page
    assert "Line &lt;two&gt; &amp; three." in page
    assert "<td>счёт.pdf</td><td>application/pdf</td>" in page


async def test_unknown_ids_are_named(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Asking for letters that do not exist fails with every missing id listed."""
    first, _ = await seed(sessions)
    with pytest.raises(PrintError, match=r"these letters do not exist: 999, 1000; nothing"):
        await load_letters(sessions, [first, 999, 1000, 999])
    with pytest.raises(PrintError, match=r"this letter does not exist: 5000"):
        await load_letters(sessions, [5000])


def seed_file(db: Path) -> list[int]:
    """Store the sample letters in a SQLite file, as the daemon would."""

    async def run() -> list[int]:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            await migrate.upgrade(engine)
            return await seed(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, list[int]]:
    """Give a config on a SQLite database holding the sample letters, and their ids."""
    db = tmp_path / "maild.db"
    config = tmp_path / "maild.toml"
    config.write_text(CONFIG.format(db=db), encoding="utf-8")
    return config, seed_file(db)


def test_print_cli_writes_html(setup: tuple[Path, list[int]], tmp_path: Path) -> None:
    """The command writes one HTML document with both letters and says how many it printed."""
    config, (first, second) = setup
    out = tmp_path / "print.html"
    result = CliRunner().invoke(
        main, ["letters", "print", str(first), str(second), "-c", str(config), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"printed 2 letters to {out} (HTML," in result.output
    page = out.read_text(encoding="utf-8")
    assert page.count('<section class="letter"') == 2
    assert "Иван Петров" in page and "Partner deal" in page
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".print")] == []


def test_print_cli_unknown_ids_write_nothing(setup: tuple[Path, list[int]], tmp_path: Path) -> None:
    """Unknown ids exit 1 naming them, and leave an existing output file as it was."""
    config, (first, _) = setup
    out = tmp_path / "print.html"
    out.write_text("old printout", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["letters", "print", str(first), "77", "78", "-c", str(config), "-o", str(out)]
    )
    assert result.exit_code == 1
    assert "maild: error: these letters do not exist: 77, 78; nothing was written" in result.output
    assert out.read_text(encoding="utf-8") == "old printout"
    missing = tmp_path / "new.html"
    result = CliRunner().invoke(
        main, ["letters", "print", "77", "-c", str(config), "-o", str(missing)]
    )
    assert result.exit_code == 1 and not missing.exists()


def test_print_cli_needs_ids_and_output(setup: tuple[Path, list[int]], tmp_path: Path) -> None:
    """Without ids, with a non-number id or without -o, the command is a usage error (exit 2)."""
    config, _ = setup
    out = str(tmp_path / "x.html")
    runner = CliRunner()
    assert runner.invoke(main, ["letters", "print", "-c", str(config), "-o", out]).exit_code == 2
    assert (
        runner.invoke(main, ["letters", "print", "x", "-c", str(config), "-o", out]).exit_code == 2
    )
    assert runner.invoke(main, ["letters", "print", "1", "-c", str(config)]).exit_code == 2


def test_print_cli_never_creates_a_database(tmp_path: Path) -> None:
    """Printing against a database file that does not exist says so and creates nothing."""
    db = tmp_path / "missing.db"
    config = tmp_path / "maild.toml"
    config.write_text(CONFIG.format(db=db), encoding="utf-8")
    out = tmp_path / "x.html"
    result = CliRunner().invoke(main, ["letters", "print", "1", "-c", str(config), "-o", str(out)])
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not db.exists() and not out.exists()


def test_print_cli_writes_pdf(setup: tuple[Path, list[int]], tmp_path: Path) -> None:
    """With --pdf the same document is written as a PDF."""
    pytest.importorskip("weasyprint", exc_type=ImportError)
    config, (first, second) = setup
    out = tmp_path / "print.pdf"
    result = CliRunner().invoke(
        main,
        ["letters", "print", str(first), str(second), "-c", str(config), "-o", str(out), "--pdf"],
    )
    assert result.exit_code == 0, result.output
    assert "(PDF," in result.output
    assert out.read_bytes().startswith(b"%PDF-")
