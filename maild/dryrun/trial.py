"""Try the rules on one letter exactly as the daemon does, so a dry run and the daemon agree."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from maild.core.decision import Decision, LetterFacts
from maild.core.letter import ParsedLetter
from maild.errors import ParseError
from maild.ingest.parse import parse_letter
from maild.rules.engine import RuleSet, evaluate
from maild.settings import Config

DEFAULT_FOLDER = "INBOX"


class UnknownPlace(ValueError):
    """An account or folder the config does not know; the message names the known ones."""


@dataclass(frozen=True, slots=True)
class Trial:
    """One letter tried: where it was placed, its size, what parsing made of it and the decision."""

    account: str
    folder: str
    size: int
    letter: ParsedLetter
    decision: Decision


def decide(
    ruleset: RuleSet, letter: ParsedLetter, *, account: str, folder: str, size: int
) -> Decision:
    """Evaluate the rules on a parsed letter with the very call the daemon makes."""
    return evaluate(ruleset, LetterFacts(letter, account=account, folder=folder, size=size))


def try_letter(ruleset: RuleSet, raw: bytes, *, account: str, folder: str) -> Trial:
    """Parse a raw letter and evaluate it; raise ParseError when it cannot be parsed."""
    if not raw.strip():
        raise ParseError("the letter is empty")
    letter = parse_letter(raw)
    size = len(raw)
    decision = decide(ruleset, letter, account=account, folder=folder, size=size)
    return Trial(account=account, folder=folder, size=size, letter=letter, decision=decision)


def _listed(names: list[str]) -> str:
    return ", ".join(names) or "none"


def check_account(config: Config, account: str) -> list[str]:
    """Give the folders an account watches; raise UnknownPlace for an account not in the config."""
    for item in config.accounts:
        if item.name == account:
            return list(item.folders.watch)
    known = _listed([item.name for item in config.accounts])
    raise UnknownPlace(f'unknown account "{account}" (accounts: {known})')


def choose_place(config: Config, account: str | None, folder: str | None) -> tuple[str, str]:
    """Pick the account (default: the first configured) and folder (default: INBOX) to try a letter in."""
    if account is None:
        if not config.accounts:
            raise UnknownPlace(
                "the config has no [[accounts]]: rules apply to an account's letters"
            )
        account = config.accounts[0].name
    watched = check_account(config, account)
    folder = DEFAULT_FOLDER if folder is None else folder
    if folder not in watched:
        raise UnknownPlace(
            f'folder "{folder}" is not watched by account {account} (watched: {_listed(watched)})'
        )
    return account, folder


def check_filter(config: Config, account: str | None, folder: str | None) -> None:
    """Check a replay's --account and --folder against the config; raise UnknownPlace if unknown."""
    if account is not None:
        if folder is not None:
            choose_place(config, account, folder)
        else:
            check_account(config, account)
        return
    if folder is not None:
        watched = sorted({name for item in config.accounts for name in item.folders.watch})
        if folder not in watched:
            raise UnknownPlace(
                f'folder "{folder}" is not watched by any account (watched: {_listed(watched)})'
            )


def parse_when(text: str, *, end: bool = False) -> datetime:
    """Read an ISO date or datetime as aware UTC; a bare date as an end bound covers that whole day."""
    value = text.strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        start = datetime.combine(day, time(), tzinfo=UTC)
        return start + timedelta(days=1) if end else start
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not an ISO date or datetime (e.g. 2026-11-01 or 2026-11-01T09:30+02:00)"
        ) from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
