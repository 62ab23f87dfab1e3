"""Every kind of bad config: one line naming the file and the key, exit 2, never a traceback.

`maild check-config` and `maild run` run as real processes, as an admin or systemd runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

GOOD = """
[database]
url = "sqlite+aiosqlite:///{tmp}/maild.db"

[smtp]
host = "127.0.0.1"
security = "none"

[[accounts]]
name = "sales"
address = "sales@corp.example"
  [accounts.imap]
  host = "127.0.0.1"
  port = 1993
  security = "tls"
  username = "sales"
  password_file = "{tmp}/sales.password"
  ca_file = "{tmp}/ca.pem"

[[rules]]
name = "invoices"
match = {{ header = "subject", contains = "invoice" }}
actions = [{{ forward = {{ to = "accounting@corp.example" }} }}]
"""

Case = tuple[Callable[[str], str], str]

#: name -> (how the good file is spoiled, the start of the line that must name the key)
CASES: dict[str, Case] = {
    "missing file": (lambda text: "", "cannot read: No such file or directory"),
    "toml syntax": (lambda text: text.replace("[smtp]", "[smtp"), "not valid TOML: "),
    "not utf-8": (lambda text: text.replace("[smtp]", "[smtp]\n# caf\udcff"), "not UTF-8 text"),
    "unknown key": (
        lambda text: text.replace('host = "127.0.0.1"\nsecurity', 'hots = "x"\nsecurity'),
        "smtp.hots: unknown key",
    ),
    "wrong type": (
        lambda text: text.replace("port = 1993", 'port = "1993"'),
        "accounts[0].imap.port: Input should be a valid integer",
    ),
    "bad value": (
        lambda text: text.replace("port = 1993", "port = 99999"),
        "accounts[0].imap.port: Input should be less than or equal to 65535",
    ),
    "missing password file": (
        lambda text: text.replace("sales.password", "nowhere.password"),
        "accounts[0].imap.password_file: cannot read password_file",
    ),
    "unreadable ca file": (
        lambda text: text.replace("ca.pem", "junk.pem"),
        "accounts[0].imap.ca_file: cannot load CA file",
    ),
    "bad rule": (
        lambda text: text.replace("contains =", "matches = '(', x ="),
        'rules[0] ("invoices").match',
    ),
    "bad account address": (
        lambda text: text.replace('address = "sales@corp.example"', 'address = "sales"'),
        "accounts[0].address: String should match pattern",
    ),
    "bad forward address": (
        lambda text: text.replace("accounting@corp.example", "accounting@corp"),
        'rules[0] ("invoices").actions[0].forward.to: invalid forward address',
    ),
    "plaintext off loopback": (
        lambda text: text.replace(
            'security = "none"', 'security = "none"\nhost = "mx.example"'
        ).replace('[smtp]\nhost = "127.0.0.1"\n', "[smtp]\n"),
        'smtp: security = "none" sends the password in plaintext',
    ),
}


def spoiled(tmp_path: Path, case: Case) -> Path:
    """Write the good config with its files, then spoil it as the case says."""
    (tmp_path / "sales.password").write_text("Pw-badcfg-0c1d\n", encoding="utf-8")
    (tmp_path / "junk.pem").write_text("not a certificate\n", encoding="utf-8")
    import trustme  # a test dependency

    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    path = tmp_path / "maild.toml"
    text = case[0](GOOD.format(tmp=tmp_path))
    if text:
        path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    return path


def test_the_good_config_is_good(tmp_path: Path) -> None:
    """The base every case spoils passes, so each failure below is the case's own."""
    path = spoiled(tmp_path, (lambda text: text, ""))
    [(code, output)] = run_all(["check-config", "-c", str(path)])
    assert (code, output) == (0, f"{path}: OK (1 accounts, 1 watched folders)\n")


def run_all(*commands: list[str]) -> list[tuple[int, str]]:
    """Run CLI commands side by side as processes with no terminal, as systemd would."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "maild", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in commands
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        results.append((process.returncode, out + err))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_bad_config_is_one_line_exit_2(tmp_path: Path, name: str) -> None:
    """check-config and run exit 2 with the file and key on one line, and no traceback."""
    path = spoiled(tmp_path, CASES[name])
    for code, output in run_all(["check-config", "-c", str(path)], ["run", "-c", str(path)]):
        assert code == 2, output
        assert "Traceback" not in output and "Pw-badcfg-0c1d" not in output
        lines = output.splitlines()
        assert lines and all(line.startswith(f"{path}: ") for line in lines), output
        assert any(line.startswith(f"{path}: {CASES[name][1]}") for line in lines), output
