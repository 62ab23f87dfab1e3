"""Config loading: every problem at once, with file and dotted path; secrets stripped and never inline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from maild.cli import main
from maild.errors import ConfigError
from maild.settings import load_config

EXAMPLE = Path(__file__).parents[2] / "config" / "maild.example.toml"

MINIMAL = """
[[accounts]]
name = "sales"
address = " sales@corp.example\\t"
  [accounts.imap]
  host = "127.0.0.1"
  security = "none"
  username = " sales \\n"
  password_env = "T_SALES_PW"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "maild.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The shipped example validates once its secrets exist."""
    monkeypatch.setenv("MAILD_SMTP_PASSWORD", "x")
    monkeypatch.setenv("MAILD_SALES_IMAP_PASSWORD", "x")
    config = load_config(EXAMPLE, check_secrets=False)
    assert [a.name for a in config.accounts] == ["sales", "support"]


def test_stray_whitespace_is_stripped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Addresses, usernames and passwords pasted with spaces, tabs or line breaks are cleaned."""
    monkeypatch.setenv("T_SALES_PW", "  s3cret\r\n")
    config = load_config(write(tmp_path, MINIMAL))
    account = config.accounts[0]
    assert account.address == "sales@corp.example"
    assert account.imap.username == "sales"
    assert account.imap.read_password().get_secret_value() == "s3cret"


def test_every_problem_reported_with_file_and_path(tmp_path: Path) -> None:
    """An unknown key, a bad value and a missing key are all reported at once."""
    text = """
[daemon]
poll_interval_seconds = -1
colour = "blue"

[[accounts]]
name = "Sales Team"
address = "sales@corp.example"
  [accounts.imap]
  host = "imap.corp.example"
  security = "none"
  password_env = "X"
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    joined = "\n".join(problems)
    assert f"{path}: daemon.poll_interval_seconds:" in joined
    assert f"{path}: daemon.colour: unknown key" in joined
    assert f"{path}: accounts[0].name:" in joined
    assert f"{path}: accounts[0].imap.username: Field required" in joined
    assert len(problems) >= 4


def test_rule_and_secret_problems_come_with_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong key elsewhere does not hide the rules' problems, nor rules the missing secrets."""
    monkeypatch.delenv("T_SALES_PW", raising=False)
    rules = """
[[rules]]
name = "bad"
match = { header = "subject", matches = "([" }
actions = [ { explode = true } ]
"""
    path = write(tmp_path, '[database]\ncolour = "blue"\n' + MINIMAL + rules)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: database.colour: unknown key",
        f'{path}: rules[0] ("bad").match.matches: bad regex: unterminated character set at '
        "position 1",
        f'{path}: rules[0] ("bad").actions[0]: unknown action "explode" (actions: forward, '
        "move, copy, add_flag, remove_flag, set_responsible, mark_lead, not_lead, autoreply, "
        "stop)",
    ]
    path = write(tmp_path, MINIMAL + rules)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[-1] == (
        f"{path}: accounts[0].imap.password_env: environment variable T_SALES_PW is not set"
    )
    assert len(info.value.problems) == 3


def test_plaintext_refused_off_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """security = "none" is refused for any host but loopback: no plaintext password on a network."""
    monkeypatch.setenv("T_SALES_PW", "x")
    path = write(tmp_path, MINIMAL.replace('"127.0.0.1"', '"imap.corp.example"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}: accounts[0].imap: " in str(info.value)
    assert "only allowed for a loopback host" in str(info.value)


def test_password_inline_is_refused(tmp_path: Path) -> None:
    """A password written into the file itself is an unknown key, never accepted."""
    path = write(tmp_path, MINIMAL.replace('password_env = "T_SALES_PW"', 'password = "hunter2"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    joined = "\n".join(info.value.problems)
    assert "accounts[0].imap.password: unknown key" in joined
    assert "hunter2" not in joined


def test_missing_secret_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A password_env that is not set fails the check, naming the key."""
    monkeypatch.delenv("T_SALES_PW", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL))
    assert re.search(
        r"accounts\[0\]\.imap\.password_env: environment variable T_SALES_PW", str(info.value)
    )


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the position."""
    path = write(tmp_path, "[database\nurl = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not valid TOML")


def test_database_url_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAILD_DATABASE_URL wins over the file, so a secret URL can stay in the environment."""
    monkeypatch.setenv("T_SALES_PW", "x")
    monkeypatch.setenv("MAILD_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    assert load_config(write(tmp_path, MINIMAL)).database_url() == "postgresql+asyncpg://u@h/db"


def test_check_config_cli_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`maild check-config` prints each problem as FILE: path: message and exits non-zero."""
    monkeypatch.setenv("T_SALES_PW", "x")
    runner = CliRunner()
    good = runner.invoke(main, ["check-config", "-c", str(write(tmp_path, MINIMAL))])
    assert good.exit_code == 0, good.output
    assert "OK (1 accounts, 1 watched folders)" in good.output
    bad_path = tmp_path / "bad.toml"
    bad_path.write_text(MINIMAL + '\n[daemon]\nfirst_sync = "later"\n', encoding="utf-8")
    bad = runner.invoke(main, ["check-config", "-c", str(bad_path)])
    assert bad.exit_code == 2
    assert f"{bad_path}: daemon.first_sync: Input should be 'record' or 'process'" in bad.output


SMTP = """
[smtp]
host = "smtp.corp.example"
"""


def test_smtp_without_login_needs_no_secret(tmp_path: Path) -> None:
    """A relay used without a login needs no password source, and none is read at start."""
    config = load_config(write(tmp_path, SMTP))
    assert config.smtp is not None
    assert config.smtp.username is None
    assert not config.smtp.logs_in


def test_smtp_username_needs_a_password_source(tmp_path: Path) -> None:
    """A username without password_env or password_file is an error naming the keys."""
    path = write(tmp_path, SMTP + 'username = "maild"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: smtp: username is set: also set password_env or password_file"
    ]


def test_smtp_password_source_without_username_is_refused(tmp_path: Path) -> None:
    """A password source without a username would be silently unused, so it is an error."""
    path = write(tmp_path, SMTP + 'password_file = "/etc/maild/smtp.password"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: smtp: password_file is set without username: "
        "set username, or remove password_file"
    ]


def test_smtp_both_password_sources_are_refused(tmp_path: Path) -> None:
    """With a username, exactly one source: both at once is an error."""
    text = SMTP + 'username = "maild"\npassword_env = "X"\npassword_file = "/x"\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: smtp: set only one of password_env or password_file"]


def test_smtp_login_secret_is_read_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a username, the relay's password is read at start like any other secret."""
    monkeypatch.delenv("T_SMTP_PW", raising=False)
    path = write(tmp_path, SMTP + 'username = "maild"\npassword_env = "T_SMTP_PW"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: smtp.password_env: environment variable T_SMTP_PW is not set"
    ]
    monkeypatch.setenv("T_SMTP_PW", " pw\n")
    config = load_config(path)
    assert config.smtp is not None
    assert config.smtp.read_password().get_secret_value() == "pw"


LEADS = """
[[accounts]]
name = "sales"
address = "sales@corp.example"
  [accounts.imap]
  host = "127.0.0.1"
  security = "none"
  username = "sales"
  password_env = "T_SALES_PW"
  [accounts.folders]
  watch = ["INBOX", "Leads/Web"]
  [accounts.leads]
  source = "selected"
  folders = ["Leads/Web", "Leads/Gone"]

[[accounts]]
name = "quiet"
address = "quiet@corp.example"
  [accounts.imap]
  host = "127.0.0.1"
  security = "none"
  username = "quiet"
  password_env = "T_SALES_PW"

[[scenarios]]
name = "sales"
leads_from = { sales = ["Leads/Web", "INBOX"], quiet = ["INBOX"], nobody = ["INBOX"] }
"""


def test_lead_folders_and_scenarios_are_checked(tmp_path: Path) -> None:
    """A selected folder that is not watched and a scenario folder that is no lead source are each named."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, LEADS), check_secrets=False)
    path = tmp_path / "maild.toml"
    assert info.value.problems == [
        f'{path}: accounts[0].leads.folders[1]: folder "Leads/Gone" is not watched '
        "(add it to accounts[0].folders.watch)",
        f'{path}: scenarios[0].leads_from.sales[1]: folder "INBOX" is not a lead-source folder '
        'of account "sales" (those are: Leads/Web)',
        f'{path}: scenarios[0].leads_from.quiet: account "quiet" has leads.source = "off"',
        f'{path}: scenarios[0].leads_from.nobody: no account is named "nobody"',
    ]


@pytest.mark.parametrize(
    ("leads", "message"),
    [
        ('source = "selected"', "needs at least one folder"),
        ('source = "all"\n  folders = ["INBOX"]', 'folders is used only with source = "selected"'),
        ('source = "some"', "accounts[0].leads.source"),
    ],
)
def test_lead_source_shapes(tmp_path: Path, leads: str, message: str) -> None:
    """Lead settings that contradict themselves are refused with their path."""
    text = MINIMAL + "  [accounts.leads]\n  " + leads + "\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), check_secrets=False)
    assert message in "\n".join(info.value.problems)


def test_user_sender_names_need_known_accounts(tmp_path: Path) -> None:
    """A personal sender name for an account the file does not have is named with its path."""
    text = (
        MINIMAL + '\n[[users]]\nlogin = "anna"\nsender_names = { sales = "Anna", support = "A" }\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), check_secrets=False)
    assert info.value.problems == [
        f'{tmp_path / "maild.toml"}: users[0].sender_names.support: no account is named "support"'
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[[scenarios]]\nname = "s"\n[[scenarios]]\nname = "s"\n',
            "scenario names must be unique, repeated: s",
        ),
        (
            '[[users]]\nlogin = "a"\n[[users]]\nlogin = "a"\n',
            "user logins must be unique, repeated: a",
        ),
    ],
)
def test_repeated_scenarios_and_logins_are_refused(
    tmp_path: Path, extra: str, message: str
) -> None:
    """Two scenarios with one name, or two users with one login, are a config error naming them."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL + "\n" + extra), check_secrets=False)
    assert message in "\n".join(info.value.problems)
