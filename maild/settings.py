"""Typed config models, so a wrong key is caught before start with its file and dotted path."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from maild.core.addresses import in_domains
from maild.errors import ConfigError
from maild.rules.engine import RuleSet
from maild.rules.loader import AccountInfo, compile_rules
from maild.rules.models import RuleConfig
from maild.tls import check_ca_file, is_loopback

DATABASE_URL_ENV = "MAILD_DATABASE_URL"
HEALTH_LISTEN_ENV = "MAILD_HEALTH_LISTEN"


def _strip(value: Any) -> Any:
    """Remove the spaces, tabs and line breaks a pasted address or password often carries."""
    return value.strip() if isinstance(value, str) else value


Stripped = Annotated[str, BeforeValidator(_strip)]
#: A path written as a TOML string (strict mode would otherwise want a Path object).
FilePath = Annotated[Path, Field(strict=False)]


def _lower(value: Any) -> Any:
    """Strip and lower-case a domain name, since domains compare in any letter case."""
    return value.strip().lower() if isinstance(value, str) else value


class _Model(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable.

    Strict types: ``port = "993"`` or ``enabled = "no"`` is an error naming the key, never a
    silent conversion (``"no"`` would have become false, ``true`` a port number 1). Numbers
    still widen (``poll_interval_seconds = 5`` is 5.0), and paths are written as strings.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Secret(_Model):
    """Where a secret comes from: the environment or a file, never the config file itself."""

    password_env: Stripped | None = None
    password_file: FilePath | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("set exactly one of password_env or password_file")
        return self

    def read_password(self) -> SecretStr:
        """Read the secret at start, stripped of stray whitespace; raise ValueError when absent."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"environment variable {self.password_env} is not set")
            if not value.strip():
                raise ValueError(f"environment variable {self.password_env} is empty")
            return SecretStr(value.strip())
        assert self.password_file is not None
        try:
            text = self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read password_file {self.password_file}: {exc}") from exc
        except UnicodeDecodeError:  # the exception holds the file's bytes: never chain it
            raise ValueError(f"password_file {self.password_file} is not UTF-8 text") from None
        if not text:
            raise ValueError(f"password_file {self.password_file} is empty")
        return SecretStr(text)


class DatabaseConfig(_Model):
    """The shared database; the environment may override the URL so secrets stay out of files."""

    url: Stripped = "sqlite+aiosqlite:///var/maild.db"
    migrate_on_start: bool = True
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=20, ge=0)

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value


class DaemonConfig(_Model):
    """How the daemon runs: health endpoint, polling fallback, and what a first sync does."""

    health_listen: Stripped = "127.0.0.1:9465"
    poll_interval_seconds: float = Field(default=60, gt=0)
    idle_restart_seconds: float = Field(default=300, gt=0, le=1740)
    first_sync: Literal["record", "process"] = "record"
    max_letter_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    parse_workers: int = Field(default=0, ge=0)
    parse_timeout_seconds: float = Field(default=120, gt=0)
    shutdown_grace_seconds: float = Field(default=30, ge=0)
    imap_timeout_seconds: float = Field(default=60, gt=0)
    reconnect_max_seconds: float = Field(default=300, gt=0)
    lease_seconds: float = Field(default=30, ge=1)

    @field_validator("health_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value == "":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9465 (empty string disables it)")
        return value


class OutboxConfig(_Model):
    """How effects are performed: retries with backoff, the forward loop fuse, --once's wait."""

    max_attempts: int = Field(default=10, ge=1)
    retry_base_seconds: float = Field(default=30, gt=0)
    retry_max_seconds: float = Field(default=3600, gt=0)
    forward_fuse_per_hour: int = Field(default=20, ge=0)
    once_drain_seconds: float = Field(default=60, ge=0)
    batch_size: int = Field(default=50, ge=1, le=1000)
    mailbox_batch_size: int = Field(default=500, ge=0, le=5000)
    lease_seconds: float = Field(default=300, gt=0)
    smtp_timeout_seconds: float = Field(default=60, gt=0)
    poll_seconds: float = Field(default=5, gt=0)
    forward_allowed_domains: list[
        Annotated[str, BeforeValidator(_lower), Field(pattern=r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")]
    ] = Field(default_factory=list)

    def forward_allowed(self, address: str) -> bool:
        """Tell whether a forward may go to this address: any, unless the domains are limited."""
        return not self.forward_allowed_domains or in_domains(
            address, tuple(self.forward_allowed_domains)
        )


class _Transport(Secret):
    """What SMTP and IMAP share: TLS verified unless switched off by name, plaintext only on loopback."""

    host: Stripped
    ca_file: FilePath | None = None
    tls_verify: bool = True
    allow_plaintext: bool = False

    @model_validator(mode="after")
    def _transport_is_safe(self) -> _Transport:
        problem = transport_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self


def transport_problem(section: _Transport) -> str | None:
    """Refuse plaintext off this machine and contradictory TLS keys, naming the keys to change."""
    security = getattr(section, "security", "tls")
    if security == "none":
        if not is_loopback(section.host) and not section.allow_plaintext:
            return (
                f'security = "none" sends the password in plaintext: only allowed for a loopback '
                f'host, not "{section.host}" (use TLS, or set allow_plaintext = true)'
            )
        if not section.tls_verify:
            return 'tls_verify = false has no effect with security = "none": remove it'
    elif section.allow_plaintext:
        return f'allow_plaintext = true has no effect with security = "{security}": remove it'
    if not section.tls_verify and section.ca_file is not None:
        return "ca_file and tls_verify = false contradict each other: keep one"
    return None


class SmtpConfig(_Transport):
    """The relay maild sends through; TLS unless the relay is on this machine.

    A relay may accept mail without a login (e.g. by IP), so a password source is needed
    only with a ``username``, and is then required.
    """

    port: int = Field(default=587, gt=0, le=65535)
    security: Literal["tls", "starttls", "none"] = "starttls"
    username: Stripped | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SmtpConfig:
        has_env, has_file = self.password_env is not None, self.password_file is not None
        if has_env and has_file:
            raise ValueError("set only one of password_env or password_file")
        if self.username is not None and not (has_env or has_file):
            raise ValueError("username is set: also set password_env or password_file")
        if self.username is None and (has_env or has_file):
            key = "password_env" if has_env else "password_file"
            raise ValueError(f"{key} is set without username: set username, or remove {key}")
        return self

    @property
    def logs_in(self) -> bool:
        """Tell whether maild authenticates at the relay, and so has a password to read."""
        return self.username is not None


class ImapConfig(_Transport):
    """How to log in to one account's IMAP server; implicit TLS unless on loopback."""

    port: int = Field(default=993, gt=0, le=65535)
    security: Literal["tls", "none"] = "tls"
    username: Stripped


class FoldersConfig(_Model):
    """Which folders are watched and which special folders the account has."""

    watch: list[Stripped] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    deleted: Stripped = "Trash"
    sent: Stripped = "Sent"

    @field_validator("watch")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a folder is listed twice")
        if any(not name for name in value):
            raise ValueError("a folder name is empty")
        return value


class LeadsConfig(_Model):
    """Which of an account's letters are leads: none, those of every watched folder, or chosen ones."""

    source: Literal["off", "all", "selected"] = "off"
    folders: list[Stripped] = Field(default_factory=list)

    @model_validator(mode="after")
    def _folders_fit_source(self) -> LeadsConfig:
        if self.source == "selected" and not self.folders:
            raise ValueError('source = "selected" needs at least one folder in folders')
        if self.source != "selected" and self.folders:
            raise ValueError(f'folders is used only with source = "selected", not "{self.source}"')
        if len(set(self.folders)) != len(self.folders):
            raise ValueError("a folder is listed twice")
        return self

    def is_source(self, folder: str) -> bool:
        """Tell whether new letters in this folder count as leads."""
        return self.source == "all" or (self.source == "selected" and folder in self.folders)


_FONT = r"^[A-Za-z0-9 ,.\-']{1,120}$"


class AccountOutgoingConfig(_Model):
    """How the CRM's letters from this account are composed: signature and attachment limit."""

    signature: str = ""
    signature_html: str = ""
    max_attachments_mb: float = Field(default=25, gt=0)


class OutgoingConfig(_Model):
    """Settings of every letter the CRM sends through maild."""

    default_font: Stripped = Field(default="", pattern=r"^$|" + _FONT)


class AutoreplyConfig(_Model):
    """The account's autoresponder: a period, a text, once per interval per sender."""

    enabled: bool = False
    start: Annotated[datetime, Field(strict=False)] | None = None
    end: Annotated[datetime, Field(strict=False)] | None = None
    subject: str = ""
    text: str = ""
    interval_days: int = Field(default=3, ge=1)
    null_sender: bool = True

    @field_validator("start", "end")
    @classmethod
    def _with_offset(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError(
                "needs a UTC offset, e.g. 2026-12-30T00:00:00+03:00 (a bare time is ambiguous)"
            )
        return value

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(ch in value for ch in "\r\n\x00"):
            raise ValueError("must be one line")
        return value

    @model_validator(mode="after")
    def _complete(self) -> AutoreplyConfig:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(
                f"end ({self.end.isoformat()}) is before start ({self.start.isoformat()})"
            )
        if self.enabled:
            missing = [key for key in ("start", "end") if getattr(self, key) is None]
            if missing:
                raise ValueError(f"enabled = true needs {' and '.join(missing)}")
            if not self.text.strip():
                raise ValueError("enabled = true needs a text")
        return self


class AccountConfig(_Model):
    """One shared mailbox (sales@, support@) that maild watches."""

    name: Stripped = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    address: Stripped = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    display_name: Stripped = ""
    aliases: list[Annotated[str, BeforeValidator(_strip), Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = (
        Field(default_factory=list)
    )
    enabled: bool = True
    imap: ImapConfig
    folders: FoldersConfig = Field(default_factory=FoldersConfig)
    leads: LeadsConfig = Field(default_factory=LeadsConfig)
    outgoing: AccountOutgoingConfig = Field(default_factory=AccountOutgoingConfig)
    autoreply: AutoreplyConfig = Field(default_factory=AutoreplyConfig)

    def lead_folders(self) -> list[str]:
        """Give the watched folders whose new letters count as leads."""
        return [folder for folder in self.folders.watch if self.leads.is_source(folder)]


class UserConfig(_Model):
    """A CRM user declared in the config (for installations without a CRM), upserted at start."""

    login: Stripped = Field(pattern=r"^[^\s\x00-\x1f\x7f]{1,255}$")
    full_name: Stripped = ""
    email: Stripped = ""
    sender_names: dict[str, Stripped] = Field(default_factory=dict)
    font: Stripped = Field(default="", pattern=r"^$|" + _FONT)

    @field_validator("sender_names")
    @classmethod
    def _names_not_empty(cls, value: dict[str, str]) -> dict[str, str]:
        empty = sorted(account for account, name in value.items() if not name)
        if empty:
            raise ValueError(f"empty sender name for account {', '.join(empty)}")
        return value


class ScenarioConfig(_Model):
    """A CRM scenario ("My sales", "Support") and the lead folders of each account it shows."""

    name: Stripped = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
    title: Stripped = ""
    leads_from: dict[str, list[Stripped]] = Field(default_factory=dict)


class Config(_Model):
    """The whole config file of one maild process."""

    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    smtp: SmtpConfig | None = None
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    accounts: list[AccountConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    scenarios: list[ScenarioConfig] = Field(default_factory=list)
    users: list[UserConfig] = Field(default_factory=list)
    outgoing: OutgoingConfig = Field(default_factory=OutgoingConfig)
    _ruleset: RuleSet | None = PrivateAttr(default=None)

    @property
    def ruleset(self) -> RuleSet:
        """Give the compiled rules, compiling them on first use when the config came from a dict."""
        if self._ruleset is None:
            self._ruleset = compile_rules(
                self.rules,
                rule_accounts(self.accounts),
                source="<config>",
            )
        return self._ruleset

    @field_validator("accounts")
    @classmethod
    def _unique_names(cls, value: list[AccountConfig]) -> list[AccountConfig]:
        _unique([account.name for account in value], "account names")
        return value

    @field_validator("scenarios")
    @classmethod
    def _unique_scenarios(cls, value: list[ScenarioConfig]) -> list[ScenarioConfig]:
        _unique([scenario.name for scenario in value], "scenario names")
        return value

    @field_validator("users")
    @classmethod
    def _unique_logins(cls, value: list[UserConfig]) -> list[UserConfig]:
        _unique([user.login for user in value], "user logins")
        return value

    def account(self, name: str) -> AccountConfig | None:
        """Find an account by name."""
        return next((account for account in self.accounts if account.name == name), None)

    def database_url(self) -> str:
        """Give the database URL, the environment's MAILD_DATABASE_URL winning over the file."""
        override = os.environ.get(DATABASE_URL_ENV, "").strip()
        if override:
            try:
                return DatabaseConfig._known_driver(override)
            except ValueError as exc:
                raise ConfigError([f"{DATABASE_URL_ENV}: {exc}"]) from exc
        return self.database.url

    def health_listen(self) -> str:
        """Give the health endpoint's address, MAILD_HEALTH_LISTEN winning (one per process)."""
        override = os.environ.get(HEALTH_LISTEN_ENV)
        if override is None:
            return self.daemon.health_listen
        try:
            return DaemonConfig._host_port(override.strip())
        except ValueError as exc:
            raise ConfigError([f"{HEALTH_LISTEN_ENV}: {exc}"]) from exc


def _unique(keys: list[str], what: str) -> None:
    """Refuse a list whose keys repeat, naming the repeated ones."""
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"{what} must be unique, repeated: {', '.join(duplicates)}")


def _dotted(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location the way admins write keys: accounts[0].imap.port."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _problems(path: Path, exc: ValidationError, data: dict[str, Any]) -> list[str]:
    """Turn pydantic errors into FILE: dotted.path: message lines, naming accounts by name."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{path}: {_dotted(loc)}: {message}")
    return lines


def rule_accounts(accounts: list[AccountConfig]) -> dict[str, AccountInfo]:
    """Give what the rules know of each account: folders, deleted folder, address."""
    return {
        a.name: AccountInfo(tuple(a.folders.watch), a.folders.deleted, a.address) for a in accounts
    }


def load_config(path: Path, *, check_secrets: bool = True) -> Config:
    """Read and validate a config file, raising ConfigError with every problem at once."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:  # the exception holds the file's bytes: never chain it
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        shape = _problems(path, exc, data) + _rule_problems_alone(path, data, exc)
        raise ConfigError(shape) from exc
    problems: list[str] = []
    try:
        config._ruleset = compile_rules(
            config.rules, rule_accounts(config.accounts), source=str(path)
        )
    except ConfigError as exc:  # one FILE: rules[i] ("name").path: line each
        problems += exc.problems
    problems += (
        _forward_needs_smtp(path, config)
        + _forward_domain_problems(path, config)
        + _autoreply_needs_smtp(path, config)
        + lead_problems(path, config)
        + _sender_name_problems(path, config)
    )
    if check_secrets:
        problems += _secret_problems(path, config) + _ca_problems(path, config)
    if problems:
        raise ConfigError(problems)
    return config


def _rule_problems_alone(path: Path, data: dict[str, Any], exc: ValidationError) -> list[str]:
    """Compile the rules even when another part of the file is wrong, so one run names all.

    Only when the rules and the accounts they refer to are themselves well formed: otherwise
    their own errors are already listed, and compiling would add guesses about them.
    """
    if any(error["loc"][:1] in (("rules",), ("accounts",)) for error in exc.errors()):
        return []
    try:
        rules = _RULES.validate_python(data.get("rules", []))
        accounts = _ACCOUNTS.validate_python(data.get("accounts", []))
        compile_rules(rules, rule_accounts(accounts), source=str(path))
    except ConfigError as rule_errors:
        return rule_errors.problems
    except ValidationError:
        return []
    return []


_RULES = TypeAdapter(list[RuleConfig])
_ACCOUNTS = TypeAdapter(list[AccountConfig])


def _forward_needs_smtp(path: Path, config: Config) -> list[str]:
    """Name every forward action when there is no [smtp] relay to send it through."""
    if config.smtp is not None:
        return []
    return [
        f'{path}: rules[{i}] ("{rule.name}").actions[{j}].forward: needs an [smtp] section '
        "to send through"
        for i, rule in enumerate(config.rules)
        for j, action in enumerate(rule.actions)
        if "forward" in action
    ]


def _forward_domain_problems(path: Path, config: Config) -> list[str]:
    """Name every forward target outside outbox.forward_allowed_domains, when those are set."""
    allowed = config.outbox.forward_allowed_domains
    return [
        f'{path}: rules[{i}] ("{rule.name}").actions[{j}].forward.to: "{target}" is not in '
        f"outbox.forward_allowed_domains ({', '.join(allowed)})"
        for i, rule in enumerate(config.rules)
        for j, action in enumerate(rule.actions)
        for target in [str(action.get("forward", {}).get("to", "")).strip()]
        if "forward" in action and not config.outbox.forward_allowed(target)
    ]


def _autoreply_needs_smtp(path: Path, config: Config) -> list[str]:
    """Name every enabled auto-reply when there is no [smtp] relay to send it through."""
    if config.smtp is not None:
        return []
    return [
        f"{path}: accounts[{i}].autoreply.enabled: needs an [smtp] section to send through"
        for i, account in enumerate(config.accounts)
        if account.autoreply.enabled
    ]


def _sender_name_problems(path: Path, config: Config) -> list[str]:
    """Name every personal sender name given for an account the config does not have."""
    known = {account.name for account in config.accounts}
    return [
        f'{path}: users[{i}].sender_names.{account}: no account is named "{account}"'
        for i, user in enumerate(config.users)
        for account in user.sender_names
        if account not in known
    ]


def lead_problems(path: Path | str, config: Config) -> list[str]:
    """Check lead folders are watched and scenarios show only lead folders of real accounts."""
    problems = []
    for i, account in enumerate(config.accounts):
        for j, folder in enumerate(account.leads.folders):
            if folder not in account.folders.watch:
                problems.append(
                    f'{path}: accounts[{i}].leads.folders[{j}]: folder "{folder}" is not watched '
                    f"(add it to accounts[{i}].folders.watch)"
                )
    for i, scenario in enumerate(config.scenarios):
        for name, folders in scenario.leads_from.items():
            where = f"{path}: scenarios[{i}].leads_from.{name}"
            owner = config.account(name)
            if owner is None:
                problems.append(f'{where}: no account is named "{name}"')
                continue
            if owner.leads.source == "off":
                problems.append(f'{where}: account "{name}" has leads.source = "off"')
                continue
            sources = owner.lead_folders()
            for j, folder in enumerate(folders):
                if folder not in sources:
                    problems.append(
                        f'{where}[{j}]: folder "{folder}" is not a lead-source folder of '
                        f'account "{name}" (those are: {", ".join(sources) or "none"})'
                    )
    return problems


def transports(config: Config) -> list[tuple[str, _Transport]]:
    """List every connection maild makes, with its dotted path: enabled accounts' IMAP, the relay."""
    found: list[tuple[str, _Transport]] = [
        (f"accounts[{i}].imap", account.imap)
        for i, account in enumerate(config.accounts)
        if account.enabled
    ]
    if config.smtp is not None:
        found.append(("smtp", config.smtp))
    return found


def _ca_problems(path: Path, config: Config) -> list[str]:
    """Check every ca_file loads now, so a typo in its path fails at start, not at first connect."""
    return [
        f"{path}: {where}.ca_file: {problem}"
        for where, section in transports(config)
        if section.ca_file is not None
        for problem in [check_ca_file(section.ca_file)]
        if problem is not None
    ]


@dataclass(frozen=True, slots=True)
class Insecure:
    """A connection the config makes without TLS verification or without TLS, said at start."""

    where: str
    key: str
    target: str
    event: str
    message: str


def insecure_transports(config: Config) -> list[Insecure]:
    """Name each connection target without verified TLS, once, for the loud warning at start."""
    found: dict[tuple[str, str], Insecure] = {}
    for where, section in transports(config):
        kind = "smtp" if where == "smtp" else "imap"
        target = f"{kind}://{section.host}:{getattr(section, 'port', 0)}"
        if not section.tls_verify:
            found.setdefault(
                (target, "tls_unverified"),
                Insecure(
                    where,
                    "tls_verify",
                    target,
                    "tls_unverified",
                    "tls_verify = false: the server's certificate is not checked, so anyone on "
                    "the path can read the password and the mail",
                ),
            )
        if getattr(section, "security", "") == "none" and not is_loopback(section.host):
            found.setdefault(
                (target, "plaintext_allowed"),
                Insecure(
                    where,
                    "allow_plaintext",
                    target,
                    "plaintext_allowed",
                    'security = "none" to a host that is not this machine: the password and the '
                    "mail cross the network unencrypted",
                ),
            )
    return list(found.values())


def config_warnings(path: Path, config: Config) -> list[str]:
    """Give the FILE: key: warning lines for what is allowed but unsafe, for check-config."""
    lines = [
        f"{path}: {item.where}.{item.key}: warning: {item.target}: {item.message}"
        for item in insecure_transports(config)
    ]
    listen = config.daemon.health_listen
    if listen and not is_loopback(listen.rpartition(":")[0]):
        lines.append(
            f"{path}: daemon.health_listen: warning: {listen} is not a loopback address: "
            "/healthz and /metrics answer anyone who can reach it, without authentication"
        )
    return lines


def _secret_problems(path: Path, config: Config) -> list[str]:
    """Check every secret can be read now, so a missing password fails at start, not at 3 am."""
    problems = []
    sources: list[tuple[str, Secret]] = [
        (f"accounts[{i}].imap", account.imap)
        for i, account in enumerate(config.accounts)
        if account.enabled
    ]
    if config.smtp is not None and config.smtp.logs_in:
        sources.append(("smtp", config.smtp))
    for where, secret in sources:
        try:
            secret.read_password()
        except ValueError as exc:
            key = "password_env" if secret.password_env is not None else "password_file"
            problems.append(f"{path}: {where}.{key}: {exc}")
    return problems
