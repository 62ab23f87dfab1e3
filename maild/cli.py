"""The command line: the only place that prints or exits."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn

import click

from maild import __version__
from maild import logging as maild_logging
from maild.errors import ConfigError, MaildError, ParseError
from maild.settings import Config, config_warnings, load_config

if TYPE_CHECKING:
    from maild.leads.convert import ConversionReport
    from maild.runtime import DowngradePlan

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


def _fail(exc: BaseException | str) -> NoReturn:
    """Print a maild error the admin can act on, and exit 1."""
    click.echo(f"maild: error: {exc}", err=True)
    sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="maild")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
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
    config = _load(config_path)  # first: a bad file fails before the heavy imports
    from maild.runtime import run_daemon

    try:
        result = asyncio.run(run_daemon(config, once=once, config_path=config_path))
    except MaildError as exc:
        _fail(exc)
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("maild: stopped at once by a second signal", err=True)
        sys.exit(130)
    left = result.outbox_left
    if left.get("pending") or left.get("dead"):
        click.echo(
            f"maild: outbox: {left.get('pending', 0)} effects still pending (performed by the "
            f"next run), {left.get('dead', 0)} dead; see `maild outbox list`",
            err=True,
        )
    if not result.ok:
        click.echo("maild: some folders could not be synced; see the log", err=True)
        sys.exit(1)


@main.command("check-config")
@CONFIG_OPTION
def check_config(config_path: Path) -> None:
    """Validate a config file and report every problem at once."""
    config = _load(config_path)
    for line in config_warnings(config_path, config):
        click.echo(line, err=True)
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


@db.command("downgrade")
@CONFIG_OPTION
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask (for scripts; needed without a terminal).")
def db_downgrade(config_path: Path, revision: str, yes: bool) -> None:
    """Take the schema back down to REVISION (an id like 0005, or base for no maild table).

    The tables and columns the newer revisions added are dropped with their data; every other
    row stays. Lists the revisions it undoes, then asks. Stop every `maild run` first.
    """
    from maild.runtime import UnknownRevision, downgrade_database, plan_downgrade

    config = _load(config_path, check_secrets=False)
    try:
        plan = asyncio.run(plan_downgrade(config, revision))
    except UnknownRevision as exc:
        _usage(str(exc))
    except MaildError as exc:
        _fail(exc)
    if not plan.undone:
        click.echo(f"database schema: already at {plan.current}, nothing to do")
        return
    for line in _downgrade_lines(plan):
        click.echo(line)
    if not yes:
        _confirm_on_terminal(f"Drop them and go down to {plan.target}?")
    try:
        after = asyncio.run(downgrade_database(config, plan))
    except MaildError as exc:
        _fail(exc)
    click.echo(f"database schema: {plan.current} -> {after}")
    click.echo(
        f"note: a newer `maild run` (this one needs {plan.head}) with `migrate_on_start = "
        "true` upgrades the schema again at start: start the older maild, or set it to false"
    )


def _downgrade_lines(plan: DowngradePlan) -> list[str]:
    """Word what a downgrade drops: the database, then each revision undone, newest first."""
    return [
        f"database: {plan.database}",
        f"schema at {plan.current}; going down to {plan.target} undoes these revisions and "
        "drops the tables and columns they added, with their data:",
        *(f"  {r.id}  {r.message}" for r in plan.undone),
    ]


def _confirm_on_terminal(question: str) -> None:
    """Ask yes/no on a terminal; without one, or on anything but yes, exit 1 having changed nothing."""
    if not sys.stdin.isatty():
        click.echo(
            "maild: error: no terminal to ask on: give --yes to go ahead without asking; "
            "nothing changed",
            err=True,
        )
        sys.exit(1)
    if not _confirmed(question):
        click.echo("cancelled, nothing changed", err=True)
        sys.exit(1)


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


@letters.command("print")
@CONFIG_OPTION
@click.argument("ids", metavar="ID...", nargs=-1, required=True, type=click.IntRange(min=1))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The file to write (replaced whole, never left half written).",
)
@click.option("--pdf", is_flag=True, help="Write PDF instead of HTML (needs maild[pdf]).")
def letters_print(config_path: Path, ids: tuple[int, ...], output: Path, pdf: bool) -> None:
    """Print letters into one document, one letter per page, in the order given.

    Each page shows the letter's From, To, Cc, Date, Subject, mailbox and folder, its text
    (HTML with scripts, forms and remote content removed, or plain text) and its attachments.
    If any id does not exist, nothing is written.
    """
    from maild.printing.output import write_atomically
    from maild.printing.render import render_document
    from maild.printing.service import load_letters
    from maild.runtime import with_database

    config = _load(config_path, check_secrets=False)
    try:
        found = asyncio.run(with_database(config, lambda s: load_letters(s, ids)))
        html = render_document(found)
        if pdf:
            from maild.printing.pdf import html_to_pdf

            data = html_to_pdf(html)
        else:
            data = html.encode("utf-8")
        write_atomically(output, data)
    except MaildError as exc:
        _fail(exc)
    count = f"{len(found)} {'letter' if len(found) == 1 else 'letters'}"
    click.echo(f"printed {count} to {output} ({'PDF' if pdf else 'HTML'}, {len(data)} bytes)")


def _usage(message: str) -> NoReturn:
    """Print a wrong command-line value with what would be right, and exit 2."""
    click.echo(f"maild: error: {message}", err=True)
    sys.exit(2)


def _when(*, end: bool) -> Callable[[click.Context, click.Parameter, str | None], datetime | None]:
    """Build an option callback reading an ISO date or datetime as UTC when it names no zone."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
        from maild.dryrun.trial import parse_when

        if value is None:
            return None
        try:
            return parse_when(value, end=end)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from exc

    return convert


@main.group()
def rules() -> None:
    """Try the sorting rules on letters, or apply them to letters already stored."""


@rules.command("test")
@CONFIG_OPTION
@click.option("--account", default=None, help="The account to try it in (default: the first).")
@click.option("--folder", default=None, help="The folder to try it in (default: INBOX).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as one JSON document.")
@click.argument("letter", metavar="LETTER.eml", type=click.File("rb"))
def rules_test(
    config_path: Path, account: str | None, folder: str | None, as_json: bool, letter: IO[bytes]
) -> None:
    """Try the rules on one letter file (- for stdin) and show every rule, hit or miss.

    The letter is parsed and evaluated exactly as the daemon would in that account and folder;
    the lead it would open and its Responsible follow. No mailbox or database is touched and
    no secret is read.
    """
    from maild.dryrun import report
    from maild.dryrun.outlook import outlook
    from maild.dryrun.trial import UnknownPlace, choose_place, try_letter

    config = _load(config_path, check_secrets=False)
    try:
        account, folder = choose_place(config, account, folder)
    except UnknownPlace as exc:
        _usage(str(exc))
    raw = letter.read()
    try:
        trial = try_letter(config.ruleset, raw, account=account, folder=folder)
    except ParseError as exc:
        name = getattr(letter, "name", None)
        _fail(f"{name if isinstance(name, str) else '<stdin>'}: {exc}")
    view = outlook(config, account, folder, trial.letter, trial.decision)
    if as_json:
        click.echo(report.to_json(report.trial_json(trial, view)))
        return
    for line in report.trial_lines(trial, [rule.name for rule in config.ruleset.rules], view):
        click.echo(line)


def _stored_letters(command: Callable[..., None]) -> Callable[..., None]:
    """Add the options choosing stored letters, shared by ``rules replay`` and ``rules apply``."""
    for option in reversed(
        [
            click.option(
                "--since",
                required=True,
                metavar="DATE",
                callback=_when(end=False),
                help="From this date or time.",
            ),
            click.option(
                "--until",
                metavar="DATE",
                callback=_when(end=True),
                default=None,
                help="Before this time; a date includes its whole day.",
            ),
            click.option("--account", default=None, help="Only letters of this account."),
            click.option("--folder", default=None, help="Only letters of folders of this name."),
        ]
    ):
        command = option(command)
    return command


def _check_selection(
    config: Config, account: str | None, folder: str | None, since: datetime, until: datetime | None
) -> None:
    """Refuse an unknown account or folder, or an empty time range, as a usage error."""
    from maild.dryrun.trial import UnknownPlace, check_filter

    try:
        check_filter(config, account, folder)
    except UnknownPlace as exc:
        _usage(str(exc))
    if until is not None and until <= since:
        _usage("--until must be later than --since")


@rules.command("replay")
@CONFIG_OPTION
@_stored_letters
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="At most this many letters."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines, the summary last.")
def rules_replay(
    *,
    config_path: Path,
    since: datetime,
    until: datetime | None,
    account: str | None,
    folder: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Try the rules on stored letters and show what each one would get, oldest first.

    The database is only read: each letter is parsed again from its raw bytes and evaluated
    exactly as the daemon would. A summary follows the letters.
    """
    from maild.dryrun import report
    from maild.dryrun.replay import Replayed, ReplayQuery, replay

    config = _load(config_path, check_secrets=False)
    _check_selection(config, account, folder, since, until)

    def emit(item: Replayed) -> None:
        click.echo(
            report.to_json(report.replayed_json(item)) if as_json else report.replayed_line(item)
        )

    query = ReplayQuery(since=since, until=until, account=account, folder=folder, limit=limit)
    try:
        summary = asyncio.run(replay(config, query, emit))
    except MaildError as exc:
        _fail(exc)
    if as_json:
        click.echo(report.to_json(report.summary_json(summary)))
        return
    for line in report.summary_lines(summary):
        click.echo(line)


@rules.command("apply")
@CONFIG_OPTION
@_stored_letters
@click.option(
    "--rule",
    "names",
    multiple=True,
    metavar="NAME",
    help="Apply only this rule's effects (repeatable); every rule is still evaluated.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
def rules_apply(
    *,
    config_path: Path,
    since: datetime,
    until: datetime | None,
    account: str | None,
    folder: str | None,
    names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Apply the rules to stored letters: record their effects as at ingest, then perform them.

    Letters are read from the database (no letter is parsed again), decided exactly as the
    daemon decides, and each effect is queued under the daemon's own key, so nothing already
    queued is queued again. The outbox is then drained as `maild run --once` does. Exits 0
    when every effect is done or parked dead, 1 when some are still pending.
    """
    from maild.apply import report
    from maild.apply.run import UnknownRule, apply_rules
    from maild.dryrun.replay import ReplayQuery
    from maild.dryrun.report import to_json

    config = _load(config_path)
    _check_selection(config, account, folder, since, until)
    query = ReplayQuery(since=since, until=until, account=account, folder=folder)
    try:
        done = asyncio.run(apply_rules(config, query, rules=names))
    except UnknownRule as exc:
        _usage(str(exc))
    except MaildError as exc:
        _fail(exc)
    if as_json:
        click.echo(to_json(report.summary_json(done)))
    else:
        for line in report.summary_lines(done):
            click.echo(line)
    if not done.ok:
        _fail(f"{done.pending} effects still pending: the daemon performs them when they fall due")


@main.group("outbox")
def outbox_group() -> None:
    """The effects rules queued: forwards, moves, flags."""


@outbox_group.command("list")
@CONFIG_OPTION
@click.option(
    "--status",
    type=click.Choice(["pending", "done", "dead", "all"]),
    default="all",
    show_default=True,
)
@click.option("--limit", type=int, default=50, show_default=True)
def outbox_list(config_path: Path, status: str, limit: int) -> None:
    """List outbox rows, newest first, with their state and last error."""
    from maild.runtime import list_outbox

    config = _load(config_path, check_secrets=False)
    try:
        rows = asyncio.run(
            list_outbox(config, status=None if status == "all" else status, limit=limit)
        )
    except MaildError as exc:
        _fail(exc)
    if not rows:
        click.echo("outbox: nothing to show")
    for row in rows:
        letter = f"letter {row.letter_id}" if row.letter_id is not None else "no letter"
        when = {"pending": "next attempt", "done": "done"}.get(row.status, "given up")
        click.echo(
            f"{row.id:>6} {row.status:<7} {row.account} {letter} {row.kind} -> {row.target} "
            f"(attempts {row.attempts}, {when} {row.when})"
        )
        if row.last_error:
            click.echo(f"       last error: {row.last_error}")


@outbox_group.command("retry")
@CONFIG_OPTION
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-dead", is_flag=True, help="Retry every dead row.")
def outbox_retry(config_path: Path, ids: tuple[int, ...], all_dead: bool) -> None:
    """Make dead rows pending again; the daemon (or the next `run --once`) performs them."""
    from maild.runtime import retry_outbox

    if bool(ids) == all_dead:
        click.echo("maild: give outbox ids, or --all-dead (not both)", err=True)
        sys.exit(2)
    config = _load(config_path, check_secrets=False)
    try:
        count = asyncio.run(retry_outbox(config, None if all_dead else list(ids)))
    except MaildError as exc:
        _fail(exc)
    click.echo(f"outbox: {count} dead {'row' if count == 1 else 'rows'} pending again")
    if ids and count < len(ids):
        click.echo(
            f"maild: {len(ids) - count} of the ids given are not dead rows (done, pending or "
            "unknown); see `maild outbox list`",
            err=True,
        )
        sys.exit(1)


@main.group()
def leads() -> None:
    """Leads (requests): list them by scenario, reject them, switch potential clients off or on."""


@leads.command("list")
@CONFIG_OPTION
@click.option("--scenario", required=True, help="Show the leads this scenario shows.")
@click.option(
    "--status",
    type=click.Choice(["new", "accepted", "rejected", "converted", "all"]),
    default="all",
    show_default=True,
)
@click.option("--limit", type=int, default=100, show_default=True)
def leads_list(config_path: Path, scenario: str, status: str, limit: int) -> None:
    """List the leads a scenario shows, newest first."""
    from maild.dryrun.report import printable, shorten
    from maild.leads.service import leads_in_scenario
    from maild.runtime import with_database

    config = _load(config_path, check_secrets=False)
    wanted = None if status == "all" else status
    try:
        rows = asyncio.run(
            with_database(
                config, lambda s: leads_in_scenario(s, scenario, status=wanted, limit=limit)
            )
        )
    except MaildError as exc:
        _fail(exc)
    if not rows:
        click.echo(f"scenario {scenario}: no leads" + (f" with status {wanted}" if wanted else ""))
    for row in rows:
        who = f"{row.sender_name} <{row.sender_address}>" if row.sender_name else row.sender_address
        click.echo(
            f"#{row.number:<6} {row.status:<9} {row.account}/{printable(row.folder)} "
            f"{row.created_at:%Y-%m-%d %H:%M} {printable(who)}: {shorten(row.subject)}"
        )
        click.echo(
            f"        responsible {row.responsible_login or '-'}, {row.letters} "
            f"{'letter' if row.letters == 1 else 'letters'}; {printable(row.reason)}"
        )


@leads.command("reject")
@CONFIG_OPTION
@click.argument("number", type=int)
@click.option("--by", "by", required=True, help="The login of the user who rejects it.")
@click.option("--scenario", required=True, help="The scenario it is rejected in.")
def leads_reject(config_path: Path, number: int, by: str, scenario: str) -> None:
    """Reject a lead; the rejecting user becomes its responsible, to show who rejected it."""
    from maild.leads.service import reject_lead
    from maild.runtime import with_database

    config = _load(config_path, check_secrets=False)
    try:
        done = asyncio.run(
            with_database(config, lambda s: reject_lead(s, number, by=by, scenario=scenario))
        )
    except MaildError as exc:
        _fail(exc)
    click.echo(
        f"lead #{done.number}: rejected by {done.by} in scenario {done.scenario} "
        f"(was {done.previous_status}); responsible is now {done.by}"
    )


@main.command()
@CONFIG_OPTION
@click.argument("address")
@click.option("--limit", type=int, default=100, show_default=True)
def sender(config_path: Path, address: str, limit: int) -> None:
    """Show who an address is (contact person, client or potential client) and all their letters."""
    from maild.dryrun.report import printable, shorten
    from maild.leads.service import sender_letters
    from maild.runtime import with_database

    config = _load(config_path, check_secrets=False)
    try:
        report = asyncio.run(
            with_database(config, lambda s: sender_letters(s, address, limit=limit))
        )
    except MaildError as exc:
        _fail(exc)
    if report.party is None:
        click.echo(f"{report.address}: no contact person, client or potential client")
    else:
        click.echo(f"{report.address}: {printable(report.party.describe())}")
    if not report.letters:
        click.echo("no letters")
    for letter in report.letters:
        when = f"{letter.when:%Y-%m-%d %H:%M}" if letter.when else "????-??-?? ??:??"
        lead = f" [lead #{letter.lead_number}]" if letter.lead_number else ""
        click.echo(
            f"{letter.id:>7} {when} {letter.account}/{printable(letter.folder)} "
            f"{letter.from_address}: {shorten(letter.subject)}{lead}"
        )


@leads.command("disable-potential-clients")
@CONFIG_OPTION
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
def leads_disable_potential_clients(config_path: Path, yes: bool) -> None:
    """Convert every potential client into a client, re-point their documents, switch them off.

    Each potential client is converted in its own transaction and keeps a link to what it
    became; an interrupted run is finished by running the command again.
    """
    from maild.leads.switch import disable_potential_clients, potential_clients_pending

    config = _load(config_path, check_secrets=False)
    try:
        state = asyncio.run(potential_clients_pending(config))
    except MaildError as exc:
        _fail(exc)
    click.echo(
        f"potential clients: {state.unlinked} to convert into clients, "
        f"{state.linked} already linked (left alone); use_potential_clients is "
        f"{'on' if state.enabled else 'off'}"
    )
    question = (
        f"Convert {state.unlinked} potential clients and switch potential clients off?"
        if state.unlinked
        else "Nothing to convert. Switch potential clients off?"
    )
    if not yes and not _confirmed(question):
        click.echo("cancelled, nothing changed", err=True)
        sys.exit(1)
    # The bar only when there is work: an empty one would just print its label.
    bar = click.progressbar(
        length=max(state.unlinked, 1),
        label="converting",
        file=sys.stderr,
        hidden=not state.unlinked,
    )
    with bar:
        try:
            report = asyncio.run(disable_potential_clients(config, progress=bar.update))
        except MaildError as exc:
            _fail(exc)
    for line in _conversion_lines(report):
        click.echo(line)


def _confirmed(question: str) -> bool:
    """Ask yes/no; no answer at all (no terminal, end of input) means no."""
    try:
        return click.confirm(question, default=False)
    except click.Abort:
        click.echo("", err=True)
        return False


def _conversion_lines(report: ConversionReport) -> list[str]:
    """Word a conversion's summary: the figures, then the existing clients matched."""
    lines = [
        f"converted {report.converted} potential clients: {report.clients_created} clients and "
        f"{report.contacts_created} contact persons created, {report.matched} matched to "
        f"existing clients",
        f"documents updated: {report.documents_updated} ({report.letters_updated} letters, "
        f"{report.leads_updated} leads); {report.already_linked} potential clients were "
        "already linked",
    ]
    if report.matches:
        lines.append("matched existing clients instead of creating them:")
        lines.extend(f"  {match}" for match in report.matches)
        if report.matched > len(report.matches):
            lines.append(f"  ... and {report.matched - len(report.matches)} more")
    lines.append("use_potential_clients is now off")
    return lines


@leads.command("enable-potential-clients")
@CONFIG_OPTION
def leads_enable_potential_clients(config_path: Path) -> None:
    """Switch potential clients back on: unknown senders become potential clients again."""
    from maild.leads.switch import enable_potential_clients

    config = _load(config_path, check_secrets=False)
    try:
        asyncio.run(enable_potential_clients(config))
    except MaildError as exc:
        _fail(exc)
    click.echo("use_potential_clients is now on")


@main.group("autoreply")
def autoreply_group() -> None:
    """The autoresponder: show each account's period and state, switch one off by hand."""


@autoreply_group.command("status")
@CONFIG_OPTION
def autoreply_status(config_path: Path) -> None:
    """List the accounts with an auto-reply: period, interval and state now."""
    from maild.runtime import autoreply_status as read_status

    config = _load(config_path, check_secrets=False)
    try:
        rows = asyncio.run(read_status(config))
    except MaildError as exc:
        _fail(exc)
    if not rows:
        click.echo("no account has an auto-reply")
    for row in rows:
        start = row.start.isoformat() if row.start else "-"
        end = row.end.isoformat() if row.end else "-"
        off = (
            f", switched off by hand at {row.switched_off_at.isoformat(timespec='seconds')}"
            if row.switched_off_at
            else ""
        )
        click.echo(
            f"{row.account:<16} {row.state:<11} {start} .. {end}, "
            f"once per {row.interval_days} day(s) per sender{off}"
        )


@autoreply_group.command("off")
@CONFIG_OPTION
@click.argument("account")
@click.option("--by", "by", default="", help="Who switches it off (kept in the database).")
def autoreply_off(config_path: Path, account: str, by: str) -> None:
    """Switch an account's auto-reply off now, until its period ends; survives restarts."""
    from maild.runtime import autoreply_switch

    config = _load(config_path, check_secrets=False)
    try:
        said = asyncio.run(autoreply_switch(config, account, on=False, by=by))
    except MaildError as exc:
        _fail(exc)
    click.echo(f"{account}: auto-reply {said}")


@autoreply_group.command("on")
@CONFIG_OPTION
@click.argument("account")
def autoreply_on(config_path: Path, account: str) -> None:
    """Undo `maild autoreply off`: the account answers again until its period ends."""
    from maild.runtime import autoreply_switch

    config = _load(config_path, check_secrets=False)
    try:
        said = asyncio.run(autoreply_switch(config, account, on=True))
    except MaildError as exc:
        _fail(exc)
    click.echo(f"{account}: auto-reply {said}")


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
