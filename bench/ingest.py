"""Ingest benchmark: how fast maild brings a mailbox into the database, against its peers.

Run by hand (it is not a test)::

    .venv/bin/python bench/ingest.py [--letters 10000] [--postgres-url URL] [--skip-postgres]

One run seeds a throwaway Dovecot folder with N realistic letters (deterministic seed, sizes
from 1 KB to 5 MB, skewed towards small ones) and then measures, on exactly those letters:

(a)  fetch   stdlib ``imaplib``: ``UID FETCH BODY.PEEK[]``, 150 letters a command;
(b)  parse   mail-parser alone (``mailparser.parse_from_bytes``) in one process on one core,
             beside maild's own parse of the same letters; (b) x ``os.cpu_count()`` is the limit that implies on every core;
(b') parse   the same, measured on every core: one process per core side by side;
(c)  maild   ``Daemon(config).run(once=True)`` with ``first_sync = "record"``: fetch, parse
             and store, on a fresh SQLite file and on a fresh PostgreSQL database.

Every measured phase runs in its own subprocess, started by a small launcher process, so each
peak RSS figure is that phase's own. maild is held to (c) / (b) >= 1.8: parsing in parallel
off the event loop, overlapped with fetching and storing, should beat one core of
mail-parser by 80 %; and, against the usual mail fetchers on the same folder, to at least
2 x fetchmail's rate and 8 x getmail6's (each measured when installed). bench/README.md
explains every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Only the standard library (and bench/common.py, bench/peers.py, which keep to it) at import
# time: the daemon's parser pool uses "spawn", which re-imports this module in every worker,
# and the workers must stay as lean as in production.
import peers
from common import (
    DB_LABEL,
    MB,
    Launcher,
    PeakSampler,
    Sampler,
    add_common_options,
    database,
    figure,
    finish,
    kb,
    log,
    machine_busy,
    rate,
    run_phases,
    usage,
)

USER, PASSWORD, FOLDER = "bench", "bench-pw", "Bench"
SEED = 20261123
TARGET = 1.8  # (c) / (b) on 2 cores
TARGET_FETCHMAIL = 2.0  # maild / fetchmail
TARGET_GETMAIL = 8.0  # maild / getmail6
FETCH_CHUNK = 150  # letters per UID FETCH, the same as maild's BODY_CHUNK
SCRIPT = str(Path(__file__).resolve())

# (share of letters, smallest, largest) in bytes; sizes are log-uniform inside a band
SIZE_BANDS = ((0.85, 1_000, 20_000), (0.14, 20_000, 300_000), (0.01, 300_000, 5_000_000))
BAND_NAMES = ("1-20 KB", "20-300 KB", "0.3-5 MB")


# --------------------------------------------------------------------------------------------
# Letters
# --------------------------------------------------------------------------------------------


def band_of(size: int) -> int:
    """Give the index of the size band a letter of ``size`` bytes falls in."""
    if size <= 20_000:
        return 0
    if size <= 300_000:
        return 1
    return 2


def wanted_size(rng: random.Random) -> tuple[int, int]:
    """Draw a band and a size: ~85 % 1-20 KB, ~14 % 20-300 KB, ~1 % 0.3-5 MB, log-uniform inside."""
    pick = rng.random()
    for band, (share, low, high) in enumerate(SIZE_BANDS):
        if pick < share or band == len(SIZE_BANDS) - 1:
            return band, int(math.exp(rng.uniform(math.log(low), math.log(high))))
        pick -= share
    raise AssertionError("unreachable")


def to_crlf(raw: bytes) -> bytes:
    """Give a letter CRLF line ends, as IMAP serves it, so seeded bytes are fetched bytes."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def make_letter(seed_value: int, index: int, band: int, target: int) -> bytes:
    """Compose letter ``index`` so that its real size lands in its band, near ``target``.

    random_letter overshoots small sizes (non-ASCII text goes out as base64, every third letter
    also has an HTML part), so the size asked for is corrected from what came out, at most a
    few times. Each letter has its own seeded generator, so a run of N letters is the prefix of
    a run of more (only the Message-ID, made by the stdlib, differs between runs).
    """
    from maild.testing.samples import random_letter

    _, low, high = SIZE_BANDS[band]
    ask = target / (2.2 if band == 0 else 1.15 if band == 1 else 1.0)
    raw = b""
    for attempt in range(5):
        rng = random.Random(f"{seed_value}:{index}:{attempt}")
        raw = to_crlf(random_letter(rng, index, max(1, int(ask))))
        if low <= len(raw) <= high:
            break
        ask *= target / len(raw)
    return raw


def read_spool(path: Path) -> Iterator[bytes]:
    """Read back the letters the fetch phase saved, one at a time."""
    with open(path, "rb") as spool:
        while header := spool.read(8):
            (length,) = struct.unpack(">Q", header)
            yield spool.read(length)


# --------------------------------------------------------------------------------------------
# Phase workers (each runs in its own subprocess)
# --------------------------------------------------------------------------------------------


def phase_fetch(spec: dict[str, Any]) -> dict[str, Any]:
    """(a) Fetch every letter with stdlib imaplib and save the bytes for the parse phases."""
    import imaplib

    has_uid = re.compile(rb"UID (\d+)")
    conn = imaplib.IMAP4(spec["host"], spec["port"], timeout=120)
    conn.login(spec["user"], spec["password"])
    typ, _ = conn.select(f'"{spec["folder"]}"', readonly=True)
    assert typ == "OK", typ
    typ, data = conn.uid("SEARCH", "ALL")
    assert typ == "OK", typ
    uids = sorted(int(word) for word in (data[0] or b"").split())
    letters = total = 0
    seconds = 0.0
    chunk = spec["chunk"]
    with open(spec["spool"], "wb") as spool:
        for start in range(0, len(uids), chunk):
            wanted = uids[start : start + chunk]
            began = time.perf_counter()
            typ, data = conn.uid("FETCH", ",".join(map(str, wanted)), "(BODY.PEEK[])")
            seconds += time.perf_counter() - began  # only the IMAP command is timed
            assert typ == "OK", (typ, data[-1:])
            got = 0
            for item in data:
                if isinstance(item, tuple) and has_uid.search(item[0]):
                    body = item[1]
                    spool.write(struct.pack(">Q", len(body)))
                    spool.write(body)
                    got += 1
                    total += len(body)
            if got != len(wanted):
                raise RuntimeError(f"UID FETCH gave {got} letters for {len(wanted)} UIDs")
            letters += got
    conn.logout()
    return {"letters": letters, "bytes": total, "seconds": seconds, **usage()}


def phase_parse(spec: dict[str, Any]) -> dict[str, Any]:
    """(b) Parse the fetched letters (every ``parts``-th one) with mail-parser, in this process.

    With ``also_maild``, each letter is also given to maild's own parse (what its workers run:
    mail-parser, the fields maild keeps, the SHA-256), timed apart, so both share the noise.
    """
    import mailparser

    from maild.errors import ParseError
    from maild.ingest.parse import parse_and_hash

    part, parts = spec.get("part", 0), spec.get("parts", 1)
    letters = total = failed = 0
    seconds = maild_seconds = 0.0
    first = last = 0.0
    bands = [[0, 0, 0.0] for _ in SIZE_BANDS]  # letters, bytes, seconds per size band
    before = usage()
    for index, raw in enumerate(read_spool(Path(spec["spool"]))):
        if index % parts != part:
            continue
        began = time.monotonic()  # one clock for all processes, to find the common window
        first = first or began
        try:
            mailparser.parse_from_bytes(raw)
        except Exception:  # mail-parser raises many kinds on bad input; maild's parse says why
            failed += 1
        last = time.monotonic()
        spent = last - began  # reading the spool is not timed
        if spec.get("also_maild"):
            began = time.monotonic()
            with contextlib.suppress(ParseError):
                parse_and_hash(raw)
            maild_seconds += time.monotonic() - began
        seconds += spent
        letters += 1
        total += len(raw)
        band = bands[band_of(len(raw))]
        band[0] += 1
        band[1] += len(raw)
        band[2] += spent
    result = usage()
    result["cpu_self"] -= before["cpu_self"]
    return {
        "letters": letters,
        "bytes": total,
        "seconds": seconds,
        "failed": failed,
        "bands": bands,
        "window": [first, last],
        "maild_seconds": maild_seconds,
        **result,
    }


def phase_daemon(spec: dict[str, Any]) -> dict[str, Any]:
    """(c) Run maild once over the folder into a fresh, already migrated database."""
    from sqlalchemy import func, select

    from maild import logging as maild_logging
    from maild.db import migrate
    from maild.db.engine import create_engine, session_factory
    from maild.db.tables import Attachment, Letter
    from maild.runtime import Daemon
    from maild.settings import Config

    maild_logging.configure(spec["log_level"], json=True)  # what `maild run` does off a TTY
    url = spec["db_url"]

    async def prepare() -> None:
        engine = create_engine(url)
        try:
            await migrate.upgrade(engine)  # a fresh schema, not timed
        finally:
            await engine.dispose()

    async def count() -> dict[str, Any]:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                rows = await session.execute(
                    select(Letter.status, func.count()).group_by(Letter.status)
                )
                by_status = {str(s): int(n) for s, n in rows.all()}
                size = await session.execute(select(func.sum(Letter.size)))
                attachments = await session.execute(select(func.count()).select_from(Attachment))
                return {
                    "rows": sum(by_status.values()),
                    "by_status": by_status,
                    "row_bytes": int(size.scalar_one() or 0),
                    "attachments": int(attachments.scalar_one()),
                }
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    config = Config.model_validate(
        {
            "database": {"url": url, "migrate_on_start": True},
            "daemon": {
                "health_listen": "",
                "first_sync": "process" if spec.get("live") else "record",
                "parse_workers": spec.get("parse_workers", 0),
            },
            "accounts": [
                {
                    "name": spec["user"],
                    "address": f"{spec['user']}@corp.example",
                    "imap": {
                        "host": spec["host"],
                        "port": spec["port"],
                        "security": "none",
                        "username": spec["user"],
                        "password_file": spec["password_file"],
                    },
                    "folders": {"watch": [spec["folder"]]},
                    **({"leads": {"source": "all"}} if spec.get("live") else {}),
                }
            ],
        }
    )
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
    sampler = Sampler()
    sampler.start()
    peak = PeakSampler(os.getpid())  # maild and its workers together, sampled
    peak.start()
    before, machine_before = usage(), machine_busy()
    began = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = asyncio.run(Daemon(config).run(once=True))
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - began
    after, machine_after = usage(), machine_busy()
    threads, worker_hwm = sampler.stop()
    tree_peak = peak.stop()
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    measured = {
        **after,
        "hwm_children_kb": worker_hwm,
        "tree_peak_kb": tree_peak,
        "cpu_self": after["cpu_self"] - before["cpu_self"],  # the run only, not imports
        "cpu_children": after["cpu_children"] - before["cpu_children"],
        "cpu_threads": threads,
        "cpu_machine": (
            machine_after - machine_before
            if machine_after is not None and machine_before is not None
            else None
        ),
    }
    counted = asyncio.run(count())
    return {
        "ok": result.ok,
        "seconds": seconds,
        "parse_workers": config.daemon.parse_workers or os.cpu_count(),
        **counted,
        **measured,
    }


PHASES = {"fetch": phase_fetch, "parse": phase_parse, "daemon": phase_daemon}


# --------------------------------------------------------------------------------------------
# Seeding and databases (in the main process)
# --------------------------------------------------------------------------------------------


def seed(server: Any, letters: int, seed_value: int) -> dict[str, Any]:
    """Generate the letters and APPEND them into the bench folder, streaming."""
    sizes_rng = random.Random(seed_value)
    stats: dict[str, Any] = {
        "letters": 0,
        "bytes": 0,
        "generate_seconds": 0.0,
        "bands": [[0, 0] for _ in SIZE_BANDS],
        "smallest": None,
        "largest": 0,
    }

    def letters_stream() -> Iterator[bytes]:
        for index in range(letters):
            began = time.perf_counter()
            raw = make_letter(seed_value, index, *wanted_size(sizes_rng))
            stats["generate_seconds"] += time.perf_counter() - began
            stats["letters"] += 1
            stats["bytes"] += len(raw)
            band = stats["bands"][band_of(len(raw))]
            band[0] += 1
            band[1] += len(raw)
            stats["smallest"] = min(stats["smallest"] or len(raw), len(raw))
            stats["largest"] = max(stats["largest"], len(raw))
            yield raw

    began = time.perf_counter()
    uids = server.append_many(USER, FOLDER, letters_stream())
    stats["seconds"] = time.perf_counter() - began
    stats["append_seconds"] = stats["seconds"] - stats["generate_seconds"]
    if len(uids) != letters:
        raise RuntimeError(f"APPEND gave {len(uids)} UIDs for {letters} letters")
    stats.update(usage())
    return stats


def warm_up(server: Any) -> int:
    """Have Dovecot index the folder (RFC822.SIZE of every letter) before anything is timed."""
    total = 0
    with server.imap(USER) as conn:
        conn.select(f'"{FOLDER}"', readonly=True)
        typ, data = conn.uid("FETCH", "1:*", "(RFC822.SIZE)")
        assert typ == "OK", typ
        for item in data:
            if isinstance(item, bytes) and (match := re.search(rb"RFC822\.SIZE (\d+)", item)):
                total += int(match.group(1))
    return total


# --------------------------------------------------------------------------------------------
# Running and reporting the measured phases
# --------------------------------------------------------------------------------------------


def measure_parse(launcher: Launcher, spool: Path, workdir: Path, parts: int) -> dict[str, Any]:
    """(b) with one process, (b') with one process per core side by side; merged into one result."""
    results = run_phases(
        launcher,
        SCRIPT,
        "parse",
        [
            {
                "label": f"{part}of{parts}",
                "spool": str(spool),
                "part": part,
                "parts": parts,
                "also_maild": parts == 1,
            }
            for part in range(parts)
        ],
        workdir,
    )
    if parts == 1:
        return results[0]
    window = max(r["window"][1] for r in results) - min(r["window"][0] for r in results)
    return {
        "letters": sum(r["letters"] for r in results),
        "bytes": sum(r["bytes"] for r in results),
        "seconds": window,  # wall time from the first parse started to the last one done
        "failed": sum(r["failed"] for r in results),
        "cpu_self": sum(r["cpu_self"] for r in results),
        "rss_self_kb": max(r["rss_self_kb"] for r in results),
        "rss_children_kb": max(r["rss_children_kb"] for r in results),
        "hwm_self_kb": max(r["hwm_self_kb"] or 0 for r in results),
        "processes": parts,
    }


def end_to_end(
    launcher: Launcher,
    label: str,
    db_url: str,
    server: Any,
    workdir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """(c) on one database: run maild in its own subprocess."""
    password_file = workdir / "bench.password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    spec = {
        "label": label,
        "db_url": db_url,
        "host": server.host,
        "port": server.port,
        "user": USER,
        "password_file": str(password_file),
        "folder": FOLDER,
        "log_level": args.log_level,
        "parse_workers": args.parse_workers,
        "live": args.live,
        "profile": (
            str(Path(args.profile) / f"daemon-{label}-{uuid.uuid4().hex[:4]}.prof")
            if args.profile
            else None
        ),
    }
    return run_phases(launcher, SCRIPT, "daemon", [spec], workdir)[0]


def print_rss(result: dict[str, Any]) -> None:
    """Print a phase's peak RSS figures."""
    line = (
        f"   peak RSS (ru_maxrss): self {kb(result['rss_self_kb'])} KB, children "
        f"{kb(result['rss_children_kb'])} KB; own peak (VmHWM): self "
        f"{kb(result['hwm_self_kb'])} KB"
    )
    if "hwm_children_kb" in result:
        line += f", largest parser worker {kb(result['hwm_children_kb'])} KB"
    log(line)


def print_rate(result: dict[str, Any], letters: int, mbytes: float) -> None:
    """Print a phase's letters and bytes per second."""
    log(
        f"   {letters:,} letters, {mbytes:,.1f} MB in {result['seconds']:.2f} s: "
        f"{rate(letters, result['seconds']):,.1f} letters/s, "
        f"{rate(mbytes, result['seconds']):.2f} MB/s"
    )


def print_parse(result: dict[str, Any], mbytes: float, single: dict[str, Any] | None) -> None:
    """Print (b) or (b') as soon as it is done."""
    cores = os.cpu_count() or 1
    print_rate(result, result["letters"], mbytes)
    cpu = 1000 * result["cpu_self"] / max(1, result["letters"])
    line = f"   CPU {cpu:.2f} ms/letter; {result['failed']} letters raised ParseError"
    if single is None:
        line += (
            f"; implied limit on {cores} cores: "
            f"{rate(result['letters'], result['seconds']) * cores:,.1f} letters/s"
        )
    else:
        scale = rate(
            rate(result["letters"], result["seconds"]), rate(single["letters"], single["seconds"])
        )
        line += f"; {scale:.2f} x (b) on {result.get('processes', cores)} processes"
    log(line)
    if result.get("maild_seconds"):
        mine = rate(result["letters"], result["maild_seconds"])
        log(
            f"   maild's own parse (parse_and_hash, what its workers run), same letters "
            f"alternating: {mine:,.1f} letters/s, "
            f"{rate(result['seconds'], result['maild_seconds']):.2f} x mail-parser alone"
        )
    print_rss(result)
    for name, (n, b, s) in zip(BAND_NAMES, result.get("bands", []), strict=False):
        if n:
            log(
                f"   {name:>9}: {n:6,} letters {b / MB:8.1f} MB  {s:7.2f} s "
                f"({rate(s, result['seconds']):.0%} of the time) {rate(n, s):8,.1f} letters/s "
                f"{rate(b / MB, s):6.2f} MB/s"
            )


def print_daemon(result: dict[str, Any], expected: int, mbytes: float) -> None:
    """Print one (c) run as soon as it is done."""
    print_rate(result, result["rows"], mbytes)
    check = "OK" if result["rows"] == expected and result["ok"] else "MISMATCH"
    log(
        f"   rows in letters: {result['rows']:,} (expected {expected:,}: {check}); by status "
        f"{result['by_status']}; attachments {result['attachments']:,}; sum(size) "
        f"{result['row_bytes']:,} B; run ok={result['ok']}; "
        f"parse_workers={result['parse_workers']}"
    )
    print_rss(result)
    n = max(1, result["rows"])
    threads = dict(result["cpu_threads"])
    threads["other or ended threads"] = threads.get("other or ended threads", 0.0) + max(
        0.0, result["cpu_self"] - sum(threads.values())
    )  # threads that ended between samples
    parts = ", ".join(
        f"{kind} {1000 * seconds / n:.2f}"
        for kind, seconds in sorted(threads.items(), key=lambda item: -item[1])
        if 1000 * seconds / n >= 0.005
    )
    line = (
        f"   CPU per letter: maild process {1000 * result['cpu_self'] / n:.2f} ms ({parts}), "
        f"parser workers {1000 * result['cpu_children'] / n:.2f} ms"
    )
    if result.get("cpu_machine") is not None:
        others = result["cpu_machine"] - result["cpu_self"] - result["cpu_children"]
        line += (
            f", other processes (database server, Dovecot) {1000 * max(0, others) / n:.2f} ms"
            f"; {rate(result['cpu_machine'], result['seconds']):.2f} of "
            f"{os.cpu_count()} cores busy"
        )
    log(line)


def median(results: list[dict[str, Any]], count_key: str) -> dict[str, Any]:
    """Give the run with the median rate (the lower one of the middle two)."""
    ordered = sorted(results, key=lambda r: rate(r[count_key], r["seconds"]))
    return ordered[(len(ordered) - 1) // 2]


def report(
    seeded: dict[str, Any],
    fetched: dict[str, Any],
    parses: list[dict[str, Any]],
    parallels: list[dict[str, Any]],
    daemons: dict[str, list[dict[str, Any]]],
) -> None:
    """Print the final table and the ratio (c)/(b) against the target."""
    cores = os.cpu_count() or 1
    rounds = len(parses)
    mbytes = fetched["bytes"] / MB
    parsed = median(parses, "letters")
    a_rate = rate(fetched["letters"], fetched["seconds"])
    b_rate = rate(parsed["letters"], parsed["seconds"])
    b_mb = rate(mbytes, parsed["seconds"])
    rows: list[tuple[str, str, float | None, float, float, dict[str, Any]]] = [
        (
            "seed: generate+APPEND",
            "stdlib imaplib MULTIAPPEND",
            seeded["seconds"],
            rate(seeded["letters"], seeded["seconds"]),
            rate(seeded["bytes"] / MB, seeded["seconds"]),
            seeded,
        ),
        (
            "(a) fetch",
            "stdlib imaplib",
            fetched["seconds"],
            a_rate,
            rate(mbytes, fetched["seconds"]),
            fetched,
        ),
        ("(b) parse, 1 core", "mail-parser", parsed["seconds"], b_rate, b_mb, parsed),
        (f"(b) x {cores} cores", "mail-parser, implied", None, b_rate * cores, b_mb * cores, {}),
    ]
    parallel = median(parallels, "letters") if parallels else None
    if parallel is not None:
        rows.append(
            (
                f"(b') parse, {cores} procs",
                "mail-parser, measured",
                parallel["seconds"],
                rate(parallel["letters"], parallel["seconds"]),
                rate(mbytes, parallel["seconds"]),
                parallel,
            )
        )
    for label, runs in daemons.items():
        d = median(runs, "rows")
        rows.append(
            (
                f"(c) maild, {label}",
                "maild fetch+parse+store",
                d["seconds"],
                rate(d["rows"], d["seconds"]),
                rate(mbytes, d["seconds"]),
                d,
            )
        )

    log()
    log(
        f"== Results: {fetched['letters']:,} letters, {mbytes:,.1f} MB as served by IMAP, "
        f"{cores} cores (os.cpu_count()), {datetime.now(UTC):%Y-%m-%d}"
        + (f"; (b), (b') and (c): median of {rounds} rounds" if rounds > 1 else "")
    )
    header = (
        f"{'phase':<23} {'peer / what':<26} {'seconds':>8} {'letters/s':>10} {'MB/s':>7} "
        f"{'maxrss KB':>10} {'child maxrss':>12} {'VmHWM KB':>9} {'worker HWM':>10}"
    )
    log(header)
    log("-" * len(header))
    for name, peer, seconds, per_s, mb_s, d in rows:
        secs = "-" if seconds is None else f"{seconds:.2f}"
        log(
            f"{name:<23} {peer:<26} {secs:>8} {per_s:>10,.1f} {mb_s:>7.2f} "
            f"{kb(d.get('rss_self_kb')):>10} {kb(d.get('rss_children_kb')):>12} "
            f"{kb(d.get('hwm_self_kb')):>9} {kb(d.get('hwm_children_kb')):>10}"
        )
    log()
    log("maxrss / child maxrss: resource.getrusage(RUSAGE_SELF / RUSAGE_CHILDREN).ru_maxrss of the")
    log("phase's own process (for (c): maild's process; children: its largest parser worker).")
    log("VmHWM / worker HWM: the same peaks from /proc, which do not inherit the parent's peak the")
    log("way a child's ru_maxrss does. Dovecot's and PostgreSQL's memory is in none of them.")
    log()
    for label, runs in daemons.items():
        d = median(runs, "rows")
        c_rate = rate(d["rows"], d["seconds"])
        ratio = rate(c_rate, b_rate)
        verdict = "meets" if ratio >= TARGET else "BELOW"
        line = (
            f"(c)/(b) {label:<10}: {c_rate:,.1f} / {b_rate:,.1f} letters/s = {ratio:.2f}, "
            f"{verdict} the target {TARGET} on {cores} cores"
        )
        if rounds > 1:
            each = ", ".join(
                f"{rate(rate(c['rows'], c['seconds']), rate(p['letters'], p['seconds'])):.2f}"
                for c, p in zip(runs, parses, strict=True)
            )
            line += f" (rounds: {each})"
        log(line)
        extra = f"   (c) is {rate(c_rate, b_rate * cores):.0%} of (b) x {cores} cores"
        if parallel is not None:
            extra += (
                f", {rate(c_rate, rate(parallel['letters'], parallel['seconds'])):.0%} "
                f"of (b') measured on {cores} cores"
            )
        log(extra + f", {rate(c_rate, a_rate):.1%} of stdlib imaplib's fetch rate (a)")


def measure_peers(
    launcher: Launcher, imap: dict[str, Any], workdir: Path, args: argparse.Namespace
) -> dict[str, dict[str, Any] | None]:
    """Retrieve the same folder with fetchmail (all of it) and getmail6 (its first letters)."""
    found: dict[str, dict[str, Any] | None] = {}
    for tool in ("fetchmail", "getmail"):
        spec = {**imap, "password": PASSWORD, "limit": args.getmail_letters}
        result = peers.run_peer(launcher, tool, spec, workdir)
        found[tool] = result
        if result is None:
            log(f"-- {peers.NAMES[tool]}: not installed")
            continue
        if "error" in result:
            log(f"-- {peers.NAMES[tool]}: failed every attempt: {result['error']}")
            continue
        log(
            f"-- {peers.NAMES[tool]}: {result['letters']:,} letters, "
            f"{result['bytes'] / MB:,.1f} MB in {result['seconds']:.2f} s: "
            f"{rate(result['letters'], result['seconds']):,.1f} letters/s, "
            f"CPU {1000 * rate(result['cpu'], result['letters']):.2f} ms/letter"
        )
    return found


def one_round(
    launcher: Launcher,
    spool: Path,
    server: Any,
    workdir: Path,
    args: argparse.Namespace,
    mbytes: float,
    results: dict[str, Any],
) -> None:
    """Measure (b), (b'), (c) on each database and the peers once, appending to ``results``."""
    cores = os.cpu_count() or 1
    log("-- (b) parse: mail-parser alone (mailparser.parse_from_bytes), one process, one core")
    results["parses"].append(measure_parse(launcher, spool, workdir, 1))
    print_parse(results["parses"][-1], mbytes, None)
    if cores > 1:
        log(f"-- (b') parse on every core: {cores} processes side by side, one letter in {cores}")
        results["parallels"].append(measure_parse(launcher, spool, workdir, cores))
        print_parse(results["parallels"][-1], mbytes, results["parses"][-1])
    for kind, runs in results["daemons"].items():
        label = DB_LABEL[kind]
        mode = "process, leads.source=all" if args.live else "record"
        log(f"-- (c) maild end to end on {label}: Daemon(config).run(once=True), first_sync={mode}")
        with database(kind, workdir, args.postgres_url) as url:
            d = end_to_end(launcher, kind, url, server, workdir, args)
        runs.append(d)
        print_daemon(d, args.letters, mbytes)
        if d["rows"] != args.letters or not d["ok"]:
            raise RuntimeError(f"maild stored {d['rows']} rows of {args.letters} on {label}")
    if not args.skip_peers:
        imap = {"host": server.host, "port": server.port, "user": USER, "folder": FOLDER}
        results["peers"].append(measure_peers(launcher, imap, workdir, args))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Seed the folder, fetch it with imaplib, then run the rounds; give every result."""
    launcher = Launcher()  # first, while this process is still small
    from maild.testing.dovecot import DovecotServer

    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        args.profile = str(Path(args.profile).resolve())
    workdir = Path(tempfile.mkdtemp(prefix="maild-bench-"))
    server = DovecotServer(workdir / "dovecot", {USER: PASSWORD})
    log(
        f"maild ingest benchmark: {args.letters:,} letters, seed {args.seed}, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    try:
        server.start()
        server.create_folder(USER, FOLDER)
        log("-- seeding: generate letters (maild.testing.samples.random_letter), APPEND to Dovecot")
        seeded = seed(server, args.letters, args.seed)
        print_seeded(seeded)
        served = warm_up(server)
        if served != seeded["bytes"]:
            log(f"   note: Dovecot reports {served:,} bytes for {seeded['bytes']:,} appended")
        spool = workdir / "letters.spool"
        imap = {"host": server.host, "port": server.port, "user": USER, "password": PASSWORD}
        log(f"-- (a) fetch: stdlib imaplib, UID FETCH BODY.PEEK[], {FETCH_CHUNK} letters a command")
        fetched = run_phases(
            launcher,
            SCRIPT,
            "fetch",
            [{**imap, "folder": FOLDER, "chunk": FETCH_CHUNK, "spool": str(spool)}],
            workdir,
        )[0]
        mbytes = fetched["bytes"] / MB
        print_rate(fetched, fetched["letters"], mbytes)
        print_rss(fetched)
        if fetched["letters"] != args.letters:
            raise RuntimeError(f"imaplib fetched {fetched['letters']} of {args.letters} letters")
        kinds = ["sqlite"] if args.skip_postgres else ["sqlite", "postgresql"]
        results: dict[str, Any] = {
            "seeded": seeded,
            "fetched": fetched,
            "parses": [],
            "parallels": [],
            "daemons": {kind: [] for kind in kinds},
            "peers": [],
        }
        for round_no in range(1, args.repeat + 1):
            if args.repeat > 1:
                log(f"== round {round_no} of {args.repeat}")
            one_round(launcher, spool, server, workdir, args, mbytes, results)
        spool.unlink()
        return results
    finally:
        server.close()
        launcher.close()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def print_seeded(seeded: dict[str, Any]) -> None:
    """Print what seeding made."""
    bands = ", ".join(
        f"{name}: {n:,} ({rate(n, seeded['letters']):.1%}, {b / MB:,.1f} MB)"
        for name, (n, b) in zip(BAND_NAMES, seeded["bands"], strict=True)
    )
    log(
        f"   {seeded['letters']:,} letters, {seeded['bytes'] / MB:,.1f} MB "
        f"(smallest {seeded['smallest']:,} B, largest {seeded['largest']:,} B) "
        f"in {seeded['seconds']:.1f} s: generating {seeded['generate_seconds']:.1f} s, "
        f"APPEND {seeded['append_seconds']:.1f} s "
        f"({rate(seeded['bytes'] / MB, seeded['append_seconds']):.1f} MB/s)"
    )
    log(f"   sizes: {bands}")
    log(f"   peak RSS (ru_maxrss) of the main process: {kb(seeded['rss_self_kb'])} KB")


def figures(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The suite's rows: maild against mail-parser, raw imaplib, fetchmail and getmail6."""
    cores = os.cpu_count() or 1
    parse = [rate(p["letters"], p["seconds"]) for p in results["parses"]]
    daemons = {
        kind: [rate(d["rows"], d["seconds"]) for d in runs]
        for kind, runs in results["daemons"].items()
    }
    rows = [
        figure(
            "ingest",
            f"fetch+parse+store, {DB_LABEL[kind]}, {cores} cores",
            "letters/s",
            values,
            peer="mail-parser alone, 1 core",
            peer_values=parse,
            target=(("ratio_min", TARGET) if cores == 2 else None),
        )
        for kind, values in daemons.items()
    ]
    rows.append(
        figure(
            "ingest",
            "maild's parse alone (parse_and_hash), 1 core",
            "letters/s",
            [rate(p["letters"], p["maild_seconds"]) for p in results["parses"]],
            peer="mail-parser alone, 1 core, same letters alternating",
            peer_values=parse,
        )
    )
    fetched = results["fetched"]
    rows.append(
        figure(
            "ingest",
            "fetch+parse+store, SQLite",
            "letters/s",
            daemons["sqlite"],
            peer="stdlib imaplib fetch only",
            peer_values=[rate(fetched["letters"], fetched["seconds"])],
        )
    )
    slower = [min(values) for values in zip(*daemons.values(), strict=True)]
    for tool, target in (("fetchmail", TARGET_FETCHMAIL), ("getmail", TARGET_GETMAIL)):
        runs = [r for found in results["peers"] if (r := found.get(tool)) and "error" not in r]
        what = "fetch+parse+store, slower database"
        if args.skip_peers:
            note = "not measured (--skip-peers)"
        else:
            note = "not installed" if not peers.installed(tool) else "failed every attempt"
        peer = {
            "fetchmail": "fetchmail, IMAP → BSMTP file",
            "getmail": f"getmail6, IMAP → Maildir, first {args.getmail_letters:,} letters",
        }[tool]
        rows.append(
            figure(
                "ingest",
                what,
                "letters/s",
                slower,
                peer=peer,
                peer_values=[rate(r["letters"], r["seconds"]) for r in runs] or None,
                peer_note=note,
                target=("ratio_min", target),
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--letters", type=int, help="letters to seed (10000; --quick: 500)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed ({SEED})")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="maild's log level during (c); INFO is what `maild run` uses",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile maild's event loop thread in (c) into DIR (slows it down)",
    )
    parser.add_argument(
        "--parse-workers",
        type=int,
        default=0,
        help="daemon.parse_workers during (c); 0 (the default) is maild's own default",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="(c) decides every letter as arriving mail (first_sync = process, leads.source = "
        "all: each letter opens a lead), not the recording of a first sync",
    )
    parser.add_argument(
        "--skip-peers", action="store_true", help="do not run fetchmail and getmail6"
    )
    parser.add_argument(
        "--getmail-letters",
        type=int,
        help="letters getmail6 retrieves per round (1000; --quick: 200): it is slow",
    )
    add_common_options(parser)
    args = parser.parse_args()
    args.letters = args.letters or (500 if args.quick else 10_000)
    args.getmail_letters = min(args.letters, args.getmail_letters or (200 if args.quick else 1_000))
    if args.letters < 1 or args.repeat < 1:
        parser.error("--letters and --repeat must be at least 1")
    if not args.skip_postgres:  # fail before the minutes of seeding, not after
        from common import check_postgres

        problem = check_postgres(args.postgres_url)
        if problem is not None:
            parser.error(f"PostgreSQL is not usable ({problem}); pass --skip-postgres")
    results = measure(args)
    daemons = {DB_LABEL[kind]: runs for kind, runs in results["daemons"].items()}
    report(results["seeded"], results["fetched"], results["parses"], results["parallels"], daemons)
    if args.profile:
        log(f"\ncProfile data: {args.profile}/daemon-*.prof (figures above are slowed by it)")
    finish(figures(results, args), args)
    return 0


if __name__ == "__main__":
    from common import phase_entry

    if not phase_entry(PHASES):
        sys.exit(main())
