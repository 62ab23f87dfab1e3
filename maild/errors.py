"""The exception tree of maild, so callers catch a family instead of a library's exceptions.

MaildError
├── ConfigError            a config file is wrong; carries every problem at once
├── DatabaseError
│   └── SchemaOutOfDate    the database needs ``maild db upgrade``
├── ImapError              anything that went wrong talking IMAP
│   ├── ImapConnectionError    connect, TLS, timeout, drop: throw the connection away
│   ├── ImapAuthError          the server refused the login: an admin must act
│   └── ImapCommandError       the server answered NO/BAD to a command
├── LeadError              a lead or scenario asked for does not exist, or cannot change so
├── LeaseLost              another maild process took over the folder: stop polling it
├── ParseError             a letter could not be parsed (kept raw and flagged)
├── PrintError             letters asked to be printed do not exist, or the output cannot be made
└── SmtpError              the relay did not take a letter; carries ``code`` and the reply
    ├── SmtpTemporaryError     4xx, connect, TLS, timeout, drop, login: try again later
    └── SmtpPermanentError     5xx to the letter itself: sending it again will not help
"""

from __future__ import annotations


class MaildError(Exception):
    """Root of every error maild raises on purpose."""


class ConfigError(MaildError):
    """A config file is wrong; ``problems`` holds every ``FILE: path: message`` line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class DatabaseError(MaildError):
    """The shared database could not be used."""


class SchemaOutOfDate(DatabaseError):
    """The database schema is older than this maild: run ``maild db upgrade``."""


class ImapError(MaildError):
    """Anything that went wrong talking IMAP."""


class ImapConnectionError(ImapError):
    """The connection is unusable (refused, TLS, timeout, drop): reconnect with backoff."""


class ImapAuthError(ImapError):
    """The server refused the credentials: retrying soon will not help, an admin must act."""


class ImapCommandError(ImapError):
    """The server answered NO or BAD to a command; ``code`` is its response code, if it gave one."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def trycreate(self) -> bool:
        """Tell whether the target folder is missing, so creating it and retrying may work."""
        return self.code == "TRYCREATE"


class LeadError(MaildError):
    """A lead or scenario named by a command does not exist, or the change asked for cannot be made."""


class LeaseLost(MaildError):
    """Another maild process holds the folder's lease now: this one must store nothing more of it."""


class ParseError(MaildError):
    """A letter could not be parsed; it is kept raw and flagged."""


class PrintError(MaildError):
    """Letters named for printing do not exist, or the printout could not be rendered or written."""


class SmtpError(MaildError):
    """The relay did not take a letter; ``code`` is its reply code (None without one)."""

    def __init__(self, message: str, *, code: int | None = None, reply: str = "") -> None:
        self.code = code
        self.reply = reply
        super().__init__(message)


class SmtpTemporaryError(SmtpError):
    """Sending may work later: a 4xx reply, or the relay could not be reached, trusted or used."""


class SmtpPermanentError(SmtpError):
    """The relay refused this letter with a 5xx reply: sending it again unchanged will not help."""
