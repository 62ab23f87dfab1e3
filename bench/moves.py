"""A From-regex move rule applied to a whole folder of stored letters, by maild and by imapfilter.

Run by hand (it is not a test)::

    .venv/bin/python bench/moves.py [--letters 10000] [--skip-postgres] [--quick] [--skip-process]

A folder of N small letters (2-8 KB, senders drawn from five) gets one rule: letters whose
From address matches ``^(ivan|zoe)@`` move to another folder (about 2 in 5).

maild first ingests the folder with ``first_sync = "record"`` (``maild run --once``: fetch,
parse, store, no rule run, nothing queued; untimed for the target, its time printed as an
extra row). Then ``maild rules apply`` runs as an admin runs it, a process of its own: it
decides the stored letters from their rows (no letter parsed again), queues one move per
match and performs every queued UID MOVE. Timed from the command's start until the last move
is done (``outbox.done_at`` of the last move row, on the same clock). Checked: the rows are
exactly the letters the regex picks, each moved once and done, and the target folder holds
that many letters.

The reference is imapfilter running the same rule client-side on a copy of the same folder:
it fetches every From header, matches the regex, and moves the matches. Both must move
exactly the letters the regex picks.

Unless ``--skip-process``, the old figure is kept as an extra row: ``maild run --once`` with
``first_sync = "process"`` on a third copy, the rule applied as the letters are ingested.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import peers
from common import (
    DB_LABEL,
    Launcher,
    account_entry,
    add_common_options,
    database,
    databases,
    figure,
    finish,
    log,
    maild_config,
    phase_entry,
    phase_env,
    rate,
    run_phases,
)
from ingest import read_spool, to_crlf

ACCOUNT, PASSWORD = "sales", "bench-pw"
SEED = 20261127
REGEX = r"^(ivan|zoe)@"
PEER_REGEX = r"<(ivan|zoe)@"  # imapfilter matches the whole From header, Name <address>
SCRIPT = str(Path(__file__).resolve())
TARGET = 1.0  # no slower than imapfilter, start to the last letter moved


def spool_letters(path: Path, count: int) -> int:
    """Generate the letters once into a spool; give how many the rule picks."""
    from maild.testing.samples import random_letter

    rng = random.Random(SEED)
    picked = 0
    sender = re.compile(rb"^From: .*<(ivan|zoe)@", re.MULTILINE)
    with open(path, "wb") as spool:
        for index in range(count):
            raw = to_crlf(random_letter(rng, index, rng.randint(2_000, 8_000)))
            picked += bool(sender.search(raw.split(b"\r\n\r\n", 1)[0]))
            spool.write(struct.pack(">Q", len(raw)))
            spool.write(raw)
    return picked


def phase_ingest(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``maild run --once`` over the folder; time it and read the outbox's own times."""
    from sqlalchemy import func, select

    from maild import logging as maild_logging
    from maild.db.engine import create_engine, session_factory
    from maild.db.tables import Letter, OutboxItem
    from maild.runtime import Daemon
    from maild.settings import Config

    maild_logging.configure(spec["log_level"], json=True)
    config = Config.model_validate(spec["config"])
    began = time.perf_counter()
    result = asyncio.run(Daemon(config).run(once=True))
    seconds = time.perf_counter() - began

    async def times() -> dict[str, Any]:
        engine = create_engine(config.database_url())
        try:
            async with session_factory(engine)() as session:
                stored = (
                    await session.execute(select(func.count(), func.max(Letter.created_at)))
                ).one()
                moves = (
                    await session.execute(
                        select(func.count(), func.max(OutboxItem.done_at)).where(
                            OutboxItem.kind == "move", OutboxItem.status == "done"
                        )
                    )
                ).one()
        finally:
            await engine.dispose()
        moves_seconds = (moves[1] - stored[1]).total_seconds() if moves[1] is not None else 0.0
        return {"letters": stored[0], "moves": moves[0], "moves_seconds": moves_seconds}

    return {"ok": result.ok, "seconds": seconds, **asyncio.run(times())}


def toml_text(config: dict[str, Any]) -> str:
    """Write a config as TOML: tables and arrays of tables at the top, inline tables below."""
    lines: list[str] = []
    for name, value in config.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            lines.append(f"[[{name}]]" if isinstance(value, list) else f"[{name}]")
            lines.extend(f"{key} = {_toml_value(inner)}" for key, inner in item.items())
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    """Write one TOML value: JSON's strings, numbers and booleans are TOML's too."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def phase_apply(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``maild rules apply`` as a command; time its start to the last move done, and check."""
    from sqlalchemy import func, select

    from maild.db.engine import create_engine, session_factory
    from maild.db.tables import Letter, OutboxItem

    config_file = Path(spec["config_file"])
    argv = [sys.executable, "-m", "maild", "--log-level", spec["log_level"], "rules", "apply"]
    argv += ["-c", str(config_file), "--since", "2000-01-01", "--json"]
    began_wall, began = time.time(), time.perf_counter()
    done = subprocess.run(argv, env=phase_env(), capture_output=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"maild rules apply exited {done.returncode}: {done.stderr[-2000:]!r}")
    report = json.loads(done.stdout.decode().splitlines()[-1])
    pattern = re.compile(REGEX)

    async def check() -> dict[str, Any]:
        """Read the move rows and the senders back: exactly the picked letters, each once."""
        engine = create_engine(spec["db_url"])
        try:
            async with session_factory(engine)() as session:
                rows = (
                    await session.execute(
                        select(OutboxItem.letter_id, OutboxItem.status, Letter.from_address)
                        .join(Letter, Letter.id == OutboxItem.letter_id)
                        .where(OutboxItem.kind == "move")
                    )
                ).all()
                times = (
                    await session.execute(
                        select(func.max(OutboxItem.created_at), func.max(OutboxItem.done_at))
                    )
                ).one()
                senders = (await session.execute(select(Letter.from_address))).scalars().all()
        finally:
            await engine.dispose()
        picked = {address for address in senders if pattern.search(address)}
        return {
            "rows": len(rows),
            "letters_moved": len({row[0] for row in rows}),
            "all_done": all(row[1] == "done" for row in rows),
            "all_picked": all(pattern.search(row[2]) for row in rows),
            "picked_in_db": sum(1 for address in senders if address in picked),
            "last_queued": times[0].timestamp() - began_wall,
            "last_done": times[1].timestamp() - began_wall,
            "moves_seconds": (times[1] - times[0]).total_seconds(),
        }

    return {"seconds": seconds, "report": report, **asyncio.run(check())}


def _rule(target: str) -> list[dict[str, Any]]:
    """The one rule: letters from ivan@ or zoe@ move to the target folder."""
    return [
        {
            "name": "ivan and zoe",
            "match": {"address": "from", "matches": REGEX},
            "actions": [{"move": target}],
        }
    ]


def apply_round(
    launcher: Launcher,
    server: Any,
    kind: str,
    spool: Path,
    picked: int,
    workdir: Path,
    args: argparse.Namespace,
    tag: str,
) -> dict[str, Any]:
    """Ingest a fresh copy with first_sync = "record", then time `maild rules apply` on it."""
    source, target = _fresh_folders(server, spool, f"Rules{tag}", f"Moved{tag}")
    with database(kind, workdir, args.postgres_url) as url:
        config = _config(url, server, source, target, workdir, first_sync="record")
        spec = {"label": kind, "config": config, "log_level": args.log_level}
        ingest = run_phases(launcher, SCRIPT, "ingest", [spec], workdir)[0]
        if ingest["moves"] or ingest["letters"] != args.letters or not ingest["ok"]:
            raise RuntimeError(f"recording ingest: {ingest}")
        config_file = workdir / f"maild-{tag}.toml"
        config_file.write_text(toml_text(config), encoding="utf-8")
        spec = {"label": kind, "config_file": str(config_file), "db_url": url}
        spec["log_level"] = args.log_level
        mine = run_phases(launcher, SCRIPT, "apply", [spec], workdir)[0]
    moved, left = len(server.uids(ACCOUNT, target)), len(server.uids(ACCOUNT, source))
    report = mine["report"]
    log(
        f"   maild ({DB_LABEL[kind]}): recording ingest of {ingest['letters']:,} letters "
        f"{ingest['seconds']:.1f} s; `rules apply`: {report['evaluated']:,} evaluated, "
        f"{sum(report['queued'].values()):,} queued, {report['performed']:,} performed, "
        f"last move done {mine['last_done']:.2f} s after the command's start (last row "
        f"queued at {mine['last_queued']:.2f} s; the command exited at {mine['seconds']:.2f} s); "
        f"{moved:,} in {target}, {left:,} left"
    )
    checks = [
        moved == picked,
        left == args.letters - picked,
        mine["rows"] == mine["letters_moved"] == mine["picked_in_db"] == picked,
        mine["all_done"],
        mine["all_picked"],
        report["dead"] == [] and report["pending"] == 0 and report["performed"] == picked,
    ]
    if not all(checks):
        raise RuntimeError(f"maild moved {moved} letters; the rule picks {picked}: {mine}")
    return {"ingest": ingest, **mine}


def _fresh_folders(server: Any, spool: Path, source: str, target: str) -> tuple[str, str]:
    """Make the round's source (holding the spooled letters) and target folders."""
    for folder in (source, target):
        server.create_folder(ACCOUNT, folder)
    server.append_many(ACCOUNT, source, read_spool(spool))
    return source, target


def _config(
    url: str, server: Any, source: str, target: str, workdir: Path, *, first_sync: str
) -> dict[str, Any]:
    """maild's config for a round: the source folder watched, the move rule to the target."""
    return maild_config(
        url,
        [account_entry(server, ACCOUNT, [source], workdir)],
        daemon={"first_sync": first_sync},
        outbox={"once_drain_seconds": 3600},
        rules=_rule(target),
    )


def process_round(
    launcher: Launcher,
    server: Any,
    kind: str,
    spool: Path,
    picked: int,
    workdir: Path,
    args: argparse.Namespace,
    tag: str,
) -> dict[str, Any]:
    """The rule applied as letters are ingested: `maild run --once` with first_sync = "process"."""
    source, target = _fresh_folders(server, spool, f"ProcRules{tag}", f"ProcMoved{tag}")
    with database(kind, workdir, args.postgres_url) as url:
        config = _config(url, server, source, target, workdir, first_sync="process")
        spec = {"label": kind, "config": config, "log_level": args.log_level}
        mine = run_phases(launcher, SCRIPT, "ingest", [spec], workdir)[0]
    moved = len(server.uids(ACCOUNT, target))
    log(
        f"   maild run --once, first_sync = process ({DB_LABEL[kind]}): {mine['moves']:,} moves "
        f"done in {mine['seconds']:.1f} s; the moves alone {mine['moves_seconds']:.1f} s"
    )
    if moved != picked or not mine["ok"]:
        raise RuntimeError(f"maild moved {moved} letters; the rule picks {picked}")
    return mine


def peer_round(
    launcher: Launcher, server: Any, spool: Path, picked: int, workdir: Path, tag: str
) -> dict[str, Any] | None:
    """imapfilter runs the rule client-side on its own copy of the folder."""
    peer_source, peer_target = f"PeerRules{tag}", f"PeerMoved{tag}"
    for folder in (peer_source, peer_target):
        server.create_folder(ACCOUNT, folder)
    server.append_many(ACCOUNT, peer_source, read_spool(spool))
    imap = {"host": server.host, "port": server.port, "user": ACCOUNT, "password": PASSWORD}
    spec = {**imap, "folder": peer_source, "target": peer_target, "regex": PEER_REGEX}
    peer = peers.run_peer(launcher, "imapfilter", spec, workdir)
    if peer is None:
        log("   imapfilter: not installed")
        return None
    moved = len(server.uids(ACCOUNT, peer_target))
    log(f"   imapfilter: {moved:,} moved in {peer['seconds']:.2f} s")
    if moved != picked:
        raise RuntimeError(f"imapfilter moved {moved} letters; the rule picks {picked}")
    return peer


def _figures(
    letters: int,
    picked: int,
    label: str,
    runs: list[dict[str, Any]],
    peer_runs: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The rows of one database: apply against imapfilter, the moves alone, the recording ingest."""
    return [
        figure(
            "rules",
            f"From-regex move rule applied to {letters:,} stored letters (`maild rules apply`), "
            f"command start → every UID MOVE done, {label}",
            "letters/s",
            [rate(letters, m["last_done"]) for m in runs],
            peer="imapfilter, same rule client-side on the same mailbox",
            peer_values=[rate(letters, p["seconds"]) for p in peer_runs] or None,
            peer_note="not installed",
            target=("ratio_min", TARGET),
        ),
        figure(
            "rules",
            f"of which the {picked:,} UID MOVEs alone (last row queued → last move done), {label}",
            "moves/s",
            [rate(picked, m["moves_seconds"]) for m in runs],
        ),
        figure(
            "rules",
            f"(extra, untimed for the target) recording ingest before it, `run --once`, "
            f"first_sync = record, {label}",
            "letters/s",
            [rate(letters, m["ingest"]["seconds"]) for m in runs],
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--letters", type=int, help="letters in the folder (10000; --quick 500)")
    parser.add_argument("--log-level", default="INFO", help="maild's log level (INFO)")
    parser.add_argument(
        "--skip-process",
        action="store_true",
        help='skip the extra row: the rule applied while ingesting (first_sync = "process")',
    )
    add_common_options(parser)
    args = parser.parse_args()
    args.letters = args.letters or (500 if args.quick else 10_000)
    kinds = databases(args)
    launcher = Launcher()
    from maild.testing.dovecot import DovecotServer

    workdir = Path(tempfile.mkdtemp(prefix="maild-bench-moves-"))
    server = DovecotServer(workdir / "dovecot", {ACCOUNT: PASSWORD})
    try:
        server.start()
        spool = workdir / "letters.spool"
        picked = spool_letters(spool, args.letters)
        log(f"move rule: {args.letters:,} letters, {picked:,} of them from ivan@ or zoe@")
        results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        peer_runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        process_runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for round_no in range(1, args.repeat + 1):
            for kind in kinds:
                log(f"-- round {round_no}, {DB_LABEL[kind]}")
                tag = f"{kind}{round_no}"
                shared = (launcher, server, kind, spool, picked, workdir, args, tag)
                results[kind].append(apply_round(*shared))
                peer = peer_round(launcher, server, spool, picked, workdir, tag)
                if peer is not None:
                    peer_runs[kind].append(peer)
                if not args.skip_process:
                    process_runs[kind].append(process_round(*shared))
        rows = []
        for kind in kinds:
            rows += _figures(args.letters, picked, DB_LABEL[kind], results[kind], peer_runs[kind])
            if process_runs[kind]:
                rows.append(
                    figure(
                        "rules",
                        f"(extra) the rule applied while ingesting: `run --once`, first_sync = "
                        f"process, {args.letters:,} letters, start → every UID MOVE done, "
                        f"{DB_LABEL[kind]}",
                        "letters/s",
                        [rate(args.letters, m["seconds"]) for m in process_runs[kind]],
                    )
                )
        finish(rows, args)
        return 0
    finally:
        server.close()
        launcher.close()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__" and not phase_entry({"ingest": phase_ingest, "apply": phase_apply}):
    sys.exit(main())
