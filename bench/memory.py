"""Memory: maild's peak RSS while it ingests a folder holding ten 25 MB letters.

Run by hand (it is not a test)::

    .venv/bin/python bench/memory.py [--big 10] [--small 400] [--skip-postgres] [--quick]

A folder gets ``--small`` everyday letters (3-30 KB) with ``--big`` letters of 25 MB spread
among them (a base64 attachment each, as large letters are). maild ingests it once
(``bench/ingest.py``'s (c) phase, in its own process: fetch, parse in its workers, store)
on a fresh SQLite file and a fresh PostgreSQL database. Measured: the peak of the resident
sets of maild's process and its parser workers together, sampled every 50 ms, and each one's
own peak (VmHWM). maild is held to a peak of at most 4 x the largest letter + 100 MB.

The reference is mail-parser alone (``mailparser.parse_from_bytes`` in one process)
parsing the same letters, fetched with stdlib imaplib: its VmHWM is what one parse of the
largest letter costs by itself.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import ingest
from common import (
    DB_LABEL,
    MB,
    Launcher,
    add_common_options,
    database,
    databases,
    figure,
    finish,
    log,
    rate,
    run_phases,
)

USER, PASSWORD, FOLDER = "bench", "bench-pw", "Big"
SEED = 20261128
BIG = 25 * MB


def letters(big: int, small: int) -> list[bytes]:
    """Make the folder's letters: the big ones spread evenly among the small ones."""
    from maild.testing.samples import random_letter

    rng = random.Random(SEED)
    total = big + small
    every = total // big if big else total + 1
    out = []
    for index in range(total):
        size = BIG if big and index % every == every // 2 else 0
        if size:
            raw = ingest.to_crlf(random_letter(rng, index, size))
        else:
            raw = ingest.to_crlf(random_letter(rng, index, rng.randint(3_000, 30_000)))
        out.append(raw)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, help="letters of 25 MB (10; --quick 3)")
    parser.add_argument("--small", type=int, help="everyday letters (400; --quick 60)")
    parser.add_argument("--log-level", default="INFO", help="maild's log level (INFO)")
    add_common_options(parser)
    args = parser.parse_args()
    args.big = args.big if args.big is not None else (3 if args.quick else 10)
    args.small = args.small if args.small is not None else (60 if args.quick else 400)
    kinds = databases(args)
    launcher = Launcher()  # before the letters make this process big
    from maild.testing.dovecot import DovecotServer

    workdir = Path(tempfile.mkdtemp(prefix="maild-bench-memory-"))
    server = DovecotServer(workdir / "dovecot", {USER: PASSWORD})
    try:
        server.start()
        server.create_folder(USER, FOLDER)
        raws = letters(args.big, args.small)
        largest = max(map(len, raws))
        server.append_many(USER, FOLDER, raws)
        count, size = len(raws), sum(map(len, raws))
        del raws
        limit_mb = (4 * largest + 100 * MB) / MB
        log(
            f"memory: {count} letters, {size / MB:,.1f} MB; {args.big} of "
            f"{largest / MB:.1f} MB; target peak ≤ 4 × {largest / MB:.1f} + 100 = "
            f"{limit_mb:.0f} MB"
        )
        password_file = workdir / "bench.password"
        password_file.write_text(PASSWORD + "\n")
        imap = {"host": server.host, "port": server.port, "user": USER, "folder": FOLDER}
        spool = workdir / "letters.spool"
        fetch = {**imap, "password": PASSWORD, "chunk": 10, "spool": str(spool)}
        run_phases(launcher, ingest.SCRIPT, "fetch", [fetch], workdir)
        peers: list[float] = []
        mine: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for round_no in range(1, args.repeat + 1):
            parse = run_phases(launcher, ingest.SCRIPT, "parse", [{"spool": str(spool)}], workdir)
            peers.append(parse[0]["hwm_self_kb"] / 1024)
            log(f"-- round {round_no}: mail-parser alone, peak (VmHWM) {peers[-1]:.0f} MB")
            for kind in kinds:
                with database(kind, workdir, args.postgres_url) as url:
                    spec = {
                        **imap,
                        "label": kind,
                        "db_url": url,
                        "password_file": str(password_file),
                        "log_level": args.log_level,
                    }
                    d = run_phases(launcher, ingest.SCRIPT, "daemon", [spec], workdir)[0]
                if d["rows"] != count or not d["ok"]:
                    raise RuntimeError(f"maild stored {d['rows']} of {count} letters")
                mine[kind].append(d)
                log(
                    f"   maild on {DB_LABEL[kind]}: {count} letters in {d['seconds']:.1f} s "
                    f"({rate(count, d['seconds']):.1f}/s); peak RSS together "
                    f"{d['tree_peak_kb'] / 1024:.0f} MB; own peaks: maild "
                    f"{d['hwm_self_kb'] / 1024:.0f} MB, largest parser worker "
                    f"{(d['hwm_children_kb'] or 0) / 1024:.0f} MB"
                )
        rows = []
        for kind in kinds:
            rows += [
                figure(
                    "memory",
                    f"peak RSS, maild + parser workers (sampled), {args.big} × "
                    f"{largest / MB:.0f} MB among {args.small}, {DB_LABEL[kind]}",
                    "MB",
                    [d["tree_peak_kb"] / 1024 for d in mine[kind]],
                    peer="mail-parser alone, same letters, 1 process (VmHWM)",
                    peer_values=peers,
                    target=("max", round(limit_mb)),
                ),
                figure(
                    "memory",
                    f"peak RSS, maild's process alone (VmHWM), {DB_LABEL[kind]}",
                    "MB",
                    [d["hwm_self_kb"] / 1024 for d in mine[kind]],
                    target=("max", round(limit_mb)),
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


if __name__ == "__main__":
    sys.exit(main())
