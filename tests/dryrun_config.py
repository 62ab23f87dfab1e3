"""A config with two accounts and a few rules, shared by the dry-run tests of `maild rules`."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from maild.cli import main
from maild.testing.samples import SALES, SUPPORT, demo_mailboxes, letter

RULES = """
[[rules]]
name = "spam"
match = { header = "subject", contains = "viagra" }
actions = [ { move = "Trash" } ]

[[rules]]
name = "quotes"
match = { all = [ { header = "subject", contains = "quote" },
                  { domain = "from", is = "client-one.example" } ] }
actions = [ { forward = { to = "accounting@corp.example" } }, { add_flag = "seen" } ]
stop = true

[[rules]]
name = "web leads"
accounts = ["sales"]
folders = ["Leads/Web"]
actions = [ { set_responsible = "j.smith" } ]

[[rules]]
name = "with attachment"
match = { has_attachment = true }
actions = [ { copy = "Attachments" }, { add_flag = "seen" } ]
"""


def config_text(db_url: str = "sqlite+aiosqlite:///unused.db", rules: str = RULES) -> str:
    """Give the TOML: sales watches INBOX and Leads/Web, support INBOX; passwords never set."""
    return f"""
[database]
url = "{db_url}"
migrate_on_start = false

[daemon]
parse_workers = 2

[smtp]
host = "127.0.0.1"
port = 2525
security = "none"

[[accounts]]
name = "sales"
address = "{SALES}"
imap = {{ host = "127.0.0.1", security = "none", username = "sales", password_env = "MAILD_T_UNSET" }}
folders = {{ watch = ["INBOX", "Leads/Web"] }}

[[accounts]]
name = "support"
address = "{SUPPORT}"
imap = {{ host = "127.0.0.1", security = "none", username = "support", password_env = "MAILD_T_UNSET" }}
{rules}
"""


def write_config(
    tmp_path: Path, db_url: str = "sqlite+aiosqlite:///unused.db", rules: str = RULES
) -> Path:
    """Write the config to a file, as an admin would."""
    path = tmp_path / "maild.toml"
    path.write_text(config_text(db_url, rules), encoding="utf-8")
    return path


MAILBOXES = demo_mailboxes()
QUOTE = MAILBOXES[("sales", "INBOX")][0]  # a quote from client-one.example: "quotes" hits, stops
QUOTE_REPLY = MAILBOXES[("sales", "INBOX")][1]  # Re: quote, from corp with a PDF: "quotes" misses
WEB_FORM = MAILBOXES[("sales", "Leads/Web")][0]
DAMAGED = MAILBOXES[("support", "INBOX")][0]  # two photos attached
TRACKING = MAILBOXES[("support", "INBOX")][1]  # nothing matches: implicit keep
SPAM = letter(
    sender=("Spammer", "x@spam.example"),
    to=SALES,
    subject="Cheap VIAGRA",
    body="buy now",
    index=9,
)


def invoke(*args: str, stdin: str | None = None) -> Result:
    """Run the maild command line in-process, as an admin would type it."""
    return CliRunner().invoke(main, list(args), input=stdin)


def upgraded_config(tmp_path: Path, db_url: str) -> Path:
    """Write the config and create its schema with `maild db upgrade`, as an admin starts out."""
    path = write_config(tmp_path, db_url)
    result = invoke("db", "upgrade", "-c", str(path))
    assert result.exit_code == 0, result.output
    return path
