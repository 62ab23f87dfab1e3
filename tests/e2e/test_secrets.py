"""Planted passwords appear nowhere: daemon log, /healthz, /metrics, CLI output, login errors.

One Dovecot of the test's own knows two users; maild logs in as one with the right password
and as the other with a wrong one, and forwards through a relay that wants a login over
STARTTLS. Every text maild produces on the way is searched for every form of every password
(plain, IMAP-quoted, base64 as AUTH LOGIN sends it, base64 as AUTH PLAIN sends it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from maild.errors import ImapAuthError, SmtpTemporaryError
from maild.ingest.imap import ImapEndpoint, connect
from maild.outbox.smtp import SmtpSender
from maild.settings import SmtpConfig
from maild.testing import DovecotServer, SmtpSink
from maild.testing.samples import SALES
from maild.testing.samples import letter as sample
from tests.fixtures_servers import _require_dovecot

IMAP_PASSWORD = "Imap-Zk7q-planted-secret"
WRONG_PASSWORD = "Wrong-P2mv-planted-secret"
SMTP_PASSWORD = "Smtp-W3vx-planted-secret"
USERS = {"sales": IMAP_PASSWORD, "support": "Other-R8tn-planted-secret"}


def letter(subject: str) -> bytes:
    """Make a small letter to the sales account."""
    return sample(sender=("Ivan", "ivan@client.example"), to=SALES, subject=subject, body="Hi")


def forms(password: str, user: str) -> list[str]:
    """Give every form in which a password could leak."""
    return [
        password,
        f'"{password}"',
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
    ]


SECRETS = [
    *forms(IMAP_PASSWORD, "sales"),
    *forms(WRONG_PASSWORD, "support"),
    *forms(USERS["support"], "support"),
    *forms(SMTP_PASSWORD, "maild"),
]


def leaks(text: str) -> list[str]:
    """Name the secret forms found in a text."""
    return [form for form in SECRETS if form in text]


@pytest.fixture
def own_dovecot(tmp_path: Path) -> Iterator[DovecotServer]:
    """Give a Dovecot whose passwords are the planted ones."""
    _require_dovecot()
    with DovecotServer(tmp_path / "dovecot", USERS) as server:
        yield server


def write_config(tmp_path: Path, dovecot: DovecotServer, sink: SmtpSink) -> Path:
    """Write the config as an admin would: passwords in files, TLS with the private CAs."""
    secrets = {"sales": IMAP_PASSWORD, "support": WRONG_PASSWORD, "smtp": SMTP_PASSWORD}
    for name, value in secrets.items():
        (tmp_path / f"{name}.password").write_text(value + "\n", encoding="utf-8")
    accounts = "".join(
        f"""
[[accounts]]
name = "{user}"
address = "{user}@corp.example"
  [accounts.imap]
  host = "{dovecot.host}"
  port = {dovecot.tls_port}
  username = "{user}"
  password_file = "{tmp_path}/{user}.password"
  ca_file = "{dovecot.ca_file}"
"""
        for user in USERS
    )
    path = tmp_path / "maild.toml"
    path.write_text(
        f"""
[database]
url = "sqlite+aiosqlite:///{tmp_path}/maild.db"

[daemon]
health_listen = "127.0.0.1:0"
first_sync = "process"
parse_workers = 1
reconnect_max_seconds = 1

[smtp]
host = "127.0.0.1"
port = {sink.port}
security = "starttls"
username = "maild"
password_file = "{tmp_path}/smtp.password"
ca_file = "{sink.ca_file}"

[outbox]
retry_base_seconds = 0.2
{accounts}
[[rules]]
name = "to the boss"
accounts = ["sales"]
actions = [{{ forward = {{ to = "boss@corp.example" }} }}]
""",
        encoding="utf-8",
    )
    return path


def wait(what: str, check: object, timeout: float = 60.0) -> None:
    """Poll until a check holds, failing with what was awaited."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def events(log: Path) -> list[dict[str, object]]:
    """Read the daemon's JSON log lines written so far."""
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def get(port: int, path: str) -> str:
    """Read one endpoint of the health server, whatever its status code."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:  # 503 while an account cannot log in
        return str(exc.read().decode())


def cli(*commands: list[str]) -> list[str]:
    """Run CLI commands side by side and give everything each one printed."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "maild", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args in commands
    ]
    return [process.communicate(timeout=120)[0] for process in processes]


def run_daemon(config: Path, log: Path, sink: SmtpSink) -> list[str]:
    """Run the daemon until it forwarded and failed a login, read its endpoints, stop it."""
    with log.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "maild", "--log-level", "DEBUG", "run", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            wait("the forward", lambda: len(sink.messages) >= 1)
            wait(
                "the refused login",
                lambda: any("login refused" in json.dumps(e) for e in events(log)),
            )
            [port] = [e["port"] for e in events(log) if e["event"] == "health_listening"]
            bodies = [get(int(str(port)), "/healthz"), get(int(str(port)), "/metrics")]
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert '"support": {' in bodies[0] and "maild_letters_ingested" in bodies[1]
    return bodies


def login_errors(dovecot: DovecotServer, sink: SmtpSink, tmp_path: Path) -> list[str]:
    """Give the text and repr of a refused IMAP and a refused SMTP login."""

    async def both() -> list[BaseException]:
        endpoint = ImapEndpoint(
            dovecot.host, dovecot.tls_port, "tls", "support", WRONG_PASSWORD, str(dovecot.ca_file)
        )
        errors: list[BaseException] = []
        with pytest.raises(ImapAuthError) as imap:
            await connect(endpoint)
        errors.append(imap.value)
        (tmp_path / "wrong-smtp.password").write_text(WRONG_PASSWORD, encoding="utf-8")
        config = SmtpConfig(
            host="127.0.0.1",
            port=sink.port,
            username="maild",
            password_file=tmp_path / "wrong-smtp.password",
            ca_file=sink.ca_file,
        )
        sender = SmtpSender(config, timeout=5, local_hostname="maild.test")
        with pytest.raises(SmtpTemporaryError) as smtp:
            await sender.send(b"x", sender="a@corp.example", recipients=["b@corp.example"])
        await sender.close()
        return [*errors, smtp.value]

    return [f"{error} {error!r} {error.__cause__!r}" for error in asyncio.run(both())]


@pytest.mark.slow
def test_planted_passwords_appear_nowhere(own_dovecot: DovecotServer, tmp_path: Path) -> None:
    """Daemon log (DEBUG), endpoints, check-config (good and broken), dry runs, login errors."""
    own_dovecot.append("sales", "INBOX", letter(subject="Invoice 7"))
    (tmp_path / "letter.eml").write_bytes(letter(subject="Invoice 8"))
    with SmtpSink(tls="starttls", users={"maild": SMTP_PASSWORD}) as sink:
        config = write_config(tmp_path, own_dovecot, sink)
        broken = tmp_path / "broken.toml"
        broken.write_text(
            config.read_text(encoding="utf-8").replace(
                "[outbox]", f'[outbox]\npassword = "{IMAP_PASSWORD}"'
            ),
            encoding="utf-8",
        )
        log = tmp_path / "daemon.log"
        texts = {"endpoints": "\n".join(run_daemon(config, log, sink))}
        texts["daemon log"] = log.read_text(encoding="utf-8", errors="replace")
        texts["login errors"] = "\n".join(login_errors(own_dovecot, sink, tmp_path))
        names = ["check-config", "check-config broken", "rules test", "rules replay"]
        outputs = cli(
            ["check-config", "-c", str(config)],
            ["check-config", "-c", str(broken)],
            ["rules", "test", "-c", str(config), str(tmp_path / "letter.eml")],
            ["rules", "replay", "-c", str(config), "--since", "2000-01-01"],
        )
    texts |= dict(zip(names, outputs, strict=True))
    assert "login refused for 'support'" in texts["daemon log"]
    assert "OK (2 accounts" in texts["check-config"]
    assert "outbox.password: unknown key" in texts["check-config broken"]
    assert "to the boss" in texts["rules test"] and "letters tried: 1" in texts["rules replay"]
    assert {name: leaks(text) for name, text in texts.items()} == {name: [] for name in texts}
