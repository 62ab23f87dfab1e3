"""The command line: the only place that prints or exits."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from maild import __version__
from maild import logging as maild_logging
from maild.errors import ConfigError, MaildError
from maild.settings import Config, load_config

CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="MAILD_CONFIG",
    required=True,
    help="The TOML config file (env MAILD_CONFIG).",
)


def _load(path: Path, *, check_secrets: bool = True) -> Config:
    """Load the config or print every problem and exit 2."""
    try:
        return load_config(path, check_secrets=check_secrets)
    except ConfigError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(2)


def _fail(exc: BaseException) -> None:
    """Print a maild error the admin can act on, and exit 1."""
    click.echo(f"maild: error: {exc}", err=True)
    sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="maild")
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING, ERROR.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="auto: JSON unless stderr is a terminal.",
)
def main(log_level: str, log_format: str) -> None:
    """maild: the mail engine of a CRM."""
    json_logs = None if log_format == "auto" else log_format == "json"
    maild_logging.configure(log_level, json=json_logs)


@main.command()
@CONFIG_OPTION
@click.option("--once", is_flag=True, help="Process what is in the mailboxes now, then exit.")
def run(config_path: Path, once: bool) -> None:
    """Run the daemon: watch every configured folder and store each letter once."""
    from maild.runtime import run_daemon

    config = _load(config_path)
    try:
        result = asyncio.run(run_daemon(config, once=once))
    except MaildError as exc:
        _fail(exc)
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("maild: stopped at once by a second signal", err=True)
        sys.exit(130)
    if not result.ok:
        click.echo("maild: some folders could not be synced; see the log", err=True)
        sys.exit(1)


@main.command("check-config")
@CONFIG_OPTION
def check_config(config_path: Path) -> None:
    """Validate a config file and report every problem at once."""
    config = _load(config_path)
    folders = sum(len(a.folders.watch) for a in config.accounts if a.enabled)
    click.echo(f"{config_path}: OK ({len(config.accounts)} accounts, {folders} watched folders)")


@main.group()
def db() -> None:
    """Database commands."""


@db.command("upgrade")
@CONFIG_OPTION
def db_upgrade(config_path: Path) -> None:
    """Create or migrate the shared database schema to this version of maild."""
    from maild.runtime import upgrade_database

    config = _load(config_path, check_secrets=False)
    try:
        before, after = asyncio.run(upgrade_database(config))
    except MaildError as exc:
        _fail(exc)
    except Exception as exc:  # a database driver error: say it plainly
        _fail(exc)
    click.echo(f"database schema: {before or 'empty'} -> {after}")


@main.group()
def letters() -> None:
    """Commands on stored letters."""


@letters.command("retry-failed")
@CONFIG_OPTION
@click.option("--limit", type=int, default=None, help="At most this many letters.")
def letters_retry_failed(config_path: Path, limit: int | None) -> None:
    """Parse letters flagged failed again from their raw bytes."""
    from maild.runtime import retry_failed_letters

    config = _load(config_path, check_secrets=False)
    try:
        report = asyncio.run(retry_failed_letters(config, limit=limit))
    except MaildError as exc:
        _fail(exc)
    click.echo(f"retried: {len(report.fixed)} fixed, {len(report.still_failing)} still failing")
    for letter_id, reason in report.still_failing.items():
        click.echo(f"  letter {letter_id}: {reason}")
    if report.still_failing:
        sys.exit(1)


@main.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the demo's server, config and database here (default: a temp dir, removed).",
)
def demo(workdir: Path | None) -> None:
    """Start a throwaway mail server with sample letters, run maild on it, and summarise."""
    from maild.demo import run_demo

    try:
        summary = run_demo(workdir)
    except MaildError as exc:
        _fail(exc)
    click.echo(summary)


if __name__ == "__main__":
    main()
