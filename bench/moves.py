"""A From-regex move rule applied to a whole folder, by maild and by imapfilter.

Run by hand (it is not a test)::

    .venv/bin/python bench/moves.py [--letters 10000] [--skip-postgres] [--quick]

A folder of N small letters (2-8 KB, senders drawn from five) gets one rule: letters whose
From address matches ``^(ivan|zoe)@`` move to another folder (about 2 in 5). maild applies it
the only way it applies rules, to letters it ingests: ``maild run --once`` with
``first_sync = "process"`` on a fresh database reads the folder (fetch, parse, store,
decide, queue one move per match) and then performs every queued UID MOVE. Timed from its
start until the last move is done; the moves alone are timed from the last letter stored to
the last move done (the outbox rows' own times).

The reference is imapfilter running the same rule client-side on a copy of the same folder:
it fetches every From header, matches the regex, and moves the matches. Both must move
exactly the letters the regex picks.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import struct
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


def phase_maild(spec: dict[str, Any]) -> dict[str, Any]:
    """Run maild once over the folder with the rule; time it and read the outbox's own times."""
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


def one_round(
    launcher: Launcher,
    server: Any,
    kind: str,
    spool: Path,
    picked: int,
    workdir: Path,
    args: argparse.Namespace,
    tag: str,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Copy the letters into two fresh folders; maild moves in one, imapfilter in the other."""
    source, target = f"Rules{tag}", f"Moved{tag}"
    peer_source, peer_target = f"PeerRules{tag}", f"PeerMoved{tag}"
    for folder in (source, target, peer_source, peer_target):
        server.create_folder(ACCOUNT, folder)
    server.append_many(ACCOUNT, source, read_spool(spool))
    server.append_many(ACCOUNT, peer_source, read_spool(spool))
    with database(kind, workdir, args.postgres_url) as url:
        config = maild_config(
            url,
            [account_entry(server, ACCOUNT, [source], workdir)],
            daemon={"first_sync": "process"},
            outbox={"once_drain_seconds": 3600},
            rules=[
                {
                    "name": "ivan and zoe",
                    "match": {"address": "from", "matches": REGEX},
                    "actions": [{"move": target}],
                }
            ],
        )
        spec = {"label": kind, "config": config, "log_level": args.log_level}
        mine = run_phases(launcher, SCRIPT, "maild", [spec], workdir)[0]
    moved = len(server.uids(ACCOUNT, target))
    log(
        f"   maild ({DB_LABEL[kind]}): {mine['letters']:,} letters stored, {mine['moves']:,} "
        f"moves done in {mine['seconds']:.1f} s ({rate(args.letters, mine['seconds']):,.1f} "
        f"letters/s); the moves alone {mine['moves_seconds']:.1f} s "
        f"({rate(mine['moves'], mine['moves_seconds']):,.1f} UID MOVEs/s); {moved:,} in {target}"
    )
    if moved != picked or not mine["ok"]:
        raise RuntimeError(f"maild moved {moved} letters; the rule picks {picked}")
    imap = {"host": server.host, "port": server.port, "user": ACCOUNT, "password": PASSWORD}
    spec = {**imap, "folder": peer_source, "target": peer_target, "regex": PEER_REGEX}
    peer = peers.run_peer(launcher, "imapfilter", spec, workdir)
    if peer is None:
        log("   imapfilter: not installed")
        return mine, None
    moved = len(server.uids(ACCOUNT, peer_target))
    log(
        f"   imapfilter: {moved:,} moved in {peer['seconds']:.2f} s "
        f"({rate(args.letters, peer['seconds']):,.1f} letters/s)"
    )
    if moved != picked:
        raise RuntimeError(f"imapfilter moved {moved} letters; the rule picks {picked}")
    return mine, peer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--letters", type=int, help="letters in the folder (10000; --quick 500)")
    parser.add_argument("--log-level", default="INFO", help="maild's log level (INFO)")
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
        results: dict[str, list[tuple[dict[str, Any], dict[str, Any] | None]]] = {
            kind: [] for kind in kinds
        }
        for round_no in range(1, args.repeat + 1):
            for kind in kinds:
                log(f"-- round {round_no}, {DB_LABEL[kind]}")
                results[kind].append(
                    one_round(
                        launcher, server, kind, spool, picked, workdir, args, f"{kind}{round_no}"
                    )
                )
        rows = []
        for kind in kinds:
            runs = results[kind]
            peer_runs = [p for _, p in runs if p is not None]
            rows += [
                figure(
                    "rules",
                    f"From-regex move rule, {args.letters:,} letters, start → every UID MOVE "
                    f"done, {DB_LABEL[kind]}",
                    "letters/s",
                    [rate(args.letters, m["seconds"]) for m, _ in runs],
                    peer="imapfilter, same rule client-side",
                    peer_values=[rate(args.letters, p["seconds"]) for p in peer_runs] or None,
                    peer_note="not installed",
                    target=("ratio_min", TARGET),
                ),
                figure(
                    "rules",
                    f"of which the {picked:,} UID MOVEs alone, {DB_LABEL[kind]}",
                    "moves/s",
                    [rate(m["moves"], m["moves_seconds"]) for m, _ in runs],
                ),
            ]
        finish(rows, args)
        return 0
    finally:
        server.close()
        launcher.close()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__" and not phase_entry({"maild": phase_maild}):
    sys.exit(main())
