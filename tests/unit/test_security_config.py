"""Unsafe settings are refused at load, naming file and key, unless allowed by name (and then warned)."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from maild.errors import ConfigError
from maild.outbox.dispatcher import Unperformable, check_forward_target
from maild.runtime import warn_insecure
from maild.settings import Config, DaemonConfig, OutboxConfig, config_warnings, load_config
from maild.tls import is_loopback

ACCOUNT = """
[[accounts]]
name = "sales"
address = "sales@corp.example"
  [accounts.imap]
  host = "{host}"
  security = "{security}"
  username = "sales"
  password_env = "T_SEC_PW"
{extra}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "maild.toml"
    path.write_text(text, encoding="utf-8")
    return path


def account(host: str = "127.0.0.1", security: str = "none", extra: str = "") -> str:
    return ACCOUNT.format(host=host, security=security, extra=extra)


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, check_secrets=False)
    return info.value.problems


def test_plaintext_off_loopback_names_file_key_and_the_way_out(tmp_path: Path) -> None:
    """security = "none" to a remote host is refused with the file, the table and allow_plaintext."""
    path = write(tmp_path, account(host="imap.corp.example"))
    assert problems(path) == [
        f'{path}: accounts[0].imap: security = "none" sends the password in plaintext: only '
        'allowed for a loopback host, not "imap.corp.example" (use TLS, or set '
        "allow_plaintext = true)"
    ]
    smtp = write(tmp_path, '[smtp]\nhost = "relay.corp.example"\nsecurity = "none"\n')
    assert 'smtp: security = "none" sends the password in plaintext' in problems(smtp)[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "localhost", "::1", "[::1]"])
def test_plaintext_on_loopback_is_fine(tmp_path: Path, host: str) -> None:
    """Loopback in any spelling may be plaintext, with no warning."""
    config = load_config(write(tmp_path, account(host=host)), check_secrets=False)
    assert config_warnings(tmp_path, config) == []


def test_allowed_plaintext_and_unverified_tls_load_and_are_warned(tmp_path: Path) -> None:
    """Both escapes load, and check-config's warnings name the key and the target once each."""
    text = account(host="imap.corp.example", extra="  allow_plaintext = true\n") + (
        '\n[smtp]\nhost = "relay.corp.example"\nsecurity = "tls"\nport = 465\ntls_verify = false\n'
    )
    path = write(tmp_path, text)
    config = load_config(path, check_secrets=False)
    assert [line.split(": warning: ")[0] for line in config_warnings(path, config)] == [
        f"{path}: accounts[0].imap.allow_plaintext",
        f"{path}: smtp.tls_verify",
    ]


@pytest.mark.parametrize(
    ("security", "extra", "message"),
    [
        ("none", "  tls_verify = false", 'tls_verify = false has no effect with security = "none"'),
        (
            "tls",
            "  allow_plaintext = true",
            'allow_plaintext = true has no effect with security = "tls"',
        ),
        ("tls", '  tls_verify = false\n  ca_file = "/x.pem"', "ca_file and tls_verify = false"),
    ],
)
def test_keys_without_effect_are_refused(
    tmp_path: Path, security: str, extra: str, message: str
) -> None:
    """A TLS key that would be silently ignored is an error, not a false sense of safety."""
    joined = "\n".join(problems(write(tmp_path, account(security=security, extra=extra))))
    assert f"accounts[0].imap: {message}" in joined


def test_warning_logged_once_per_target(tmp_path: Path) -> None:
    """Two accounts on one unverified server give one warning; each names the key and target."""
    second = account(host="imap.corp.example", security="tls", extra="  tls_verify = false\n")
    text = second + second.replace('name = "sales"', 'name = "support"').replace(
        "sales@", "support@"
    )
    config = load_config(write(tmp_path, text), check_secrets=False)
    with structlog.testing.capture_logs() as logs:
        assert warn_insecure(config) == 1
    assert [(e["event"], e["log_level"], e["target"], e["config_key"]) for e in logs] == [
        (
            "tls_unverified",
            "warning",
            "imap://imap.corp.example:993",
            "accounts[0].imap.tls_verify",
        )
    ]


@pytest.mark.parametrize(
    ("key", "value", "path"),
    [
        ("port", '"993"', "accounts[0].imap.port"),
        ("port", "true", "accounts[0].imap.port"),
        ("port", "993.0", "accounts[0].imap.port"),
        ("tls_verify", '"no"', "accounts[0].imap.tls_verify"),
        ("tls_verify", "0", "accounts[0].imap.tls_verify"),
    ],
)
def test_no_lax_coercion(tmp_path: Path, key: str, value: str, path: str) -> None:
    """A string, boolean or float where another type is expected is an error, never converted."""
    text = account(security="tls", extra=f"  {key} = {value}\n")
    assert any(
        line.startswith(f"{tmp_path / 'maild.toml'}: {path}: ")
        for line in problems(write(tmp_path, text))
    )


def test_numbers_still_widen(tmp_path: Path) -> None:
    """An integer where a number is expected stays fine: 5 is 5.0 seconds."""
    config = load_config(write(tmp_path, "[daemon]\npoll_interval_seconds = 5\n"))
    assert config.daemon.poll_interval_seconds == 5.0


def test_ca_file_is_loaded_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing or non-PEM ca_file fails the load (with secrets checked), naming the key."""
    monkeypatch.setenv("T_SEC_PW", "x")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n", encoding="utf-8")
    for ca_file in (tmp_path / "missing.pem", junk):
        path = write(tmp_path, account(security="tls", extra=f'  ca_file = "{ca_file}"\n'))
        with pytest.raises(ConfigError) as info:
            load_config(path)
        [line] = info.value.problems
        assert line.startswith(f"{path}: accounts[0].imap.ca_file: cannot load CA file ")


@pytest.mark.parametrize(("content", "reason"), [(b"\n", "is empty"), (b"\xff\xfe", "not UTF-8")])
def test_bad_password_file(tmp_path: Path, content: bytes, reason: str) -> None:
    """An empty or non-UTF-8 password file is a one-line problem, not a traceback or a login."""
    secret = tmp_path / "pw"
    secret.write_bytes(content)
    text = account().replace('password_env = "T_SEC_PW"', f'password_file = "{secret}"')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    [line] = info.value.problems
    assert "accounts[0].imap.password_file: " in line and reason in line


RULE = """
[smtp]
host = "127.0.0.1"
security = "none"

[[rules]]
name = "out"
actions = [{{ forward = {{ to = "{to}" }} }}]
"""


def test_forward_target_is_a_literal(tmp_path: Path) -> None:
    """A target that looks like a template is refused: maild never takes it from the letter."""
    joined = "\n".join(problems(write(tmp_path, RULE.format(to="{from}@corp.example"))))
    assert 'actions[0].forward.to: invalid forward address "{from}@corp.example": must be a ' in (
        joined
    )


def test_forward_allowed_domains(tmp_path: Path) -> None:
    """With allowed domains set, a forward elsewhere is named; inside them it loads."""
    allow = '\n[outbox]\nforward_allowed_domains = ["Corp.Example"]\n'
    path = write(tmp_path, RULE.format(to="x@partner.example") + allow)
    assert problems(path) == [
        f'{path}: rules[0] ("out").actions[0].forward.to: "x@partner.example" is not in '
        "outbox.forward_allowed_domains (corp.example)"
    ]
    config = load_config(write(tmp_path, RULE.format(to="x@CORP.example") + allow))
    assert config.outbox.forward_allowed("boss@corp.example")
    assert not config.outbox.forward_allowed("boss@sub.corp.example")


def test_health_endpoint_defaults_to_loopback(tmp_path: Path) -> None:
    """/healthz and /metrics listen on loopback unless the admin says otherwise, and are warned."""
    assert is_loopback(DaemonConfig().health_listen.rpartition(":")[0])
    path = write(tmp_path, '[daemon]\nhealth_listen = "0.0.0.0:9465"\n')
    [line] = config_warnings(path, load_config(path))
    assert line.startswith(f"{path}: daemon.health_listen: warning: 0.0.0.0:9465 is not a loopback")
    assert config_warnings(path, Config()) == []


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("boss@corp.example", None),
        ("x@partner.example", "not in outbox.forward_allowed_domains"),
        ("a@corp.example, b@evil.example", "not one plain address"),
        ("a@corp.example\r\nBcc: b@evil.example", "not one plain address"),
    ],
)
def test_dispatcher_refuses_forward_rows_outside_the_rules(target: str, reason: str | None) -> None:
    """A forward row not written by the rules (the table is shared) is parked, never sent."""
    settings = OutboxConfig(forward_allowed_domains=["corp.example"])
    if reason is None:
        check_forward_target(target, settings)
        return
    with pytest.raises(Unperformable, match=reason):
        check_forward_target(target, settings)
