"""Ingest benchmark: how fast maild brings a mailbox into the database, against its peers.

Run by hand (it is not a test)::

    .venv/bin/python bench/ingest.py [--letters 10000] [--postgres-url URL] [--skip-postgres]

One run seeds a throwaway Dovecot folder with N realistic letters (deterministic seed, sizes
from 1 KB to 5 MB, skewed towards small ones) and then measures, on exactly those letters:

(a) fetch   stdlib ``imaplib``: ``UID FETCH BODY.PEEK[]`` in chunks (the raw IMAP ceiling);
(b) parse   mail-parser alone, through ``maild.ingest.parse.parse_letter``, on one core,
            and the limit that implies on every core, (b) x ``os.cpu_count()``;
(c) maild   ``Daemon(config).run(once=True)`` with ``first_sync = "record"``: fetch, parse and
            store, on a fresh SQLite file and on a fresh PostgreSQL database.

Every measured phase runs in its own subprocess, so each peak RSS figure is that phase's own.
The figure maild is held to is (c) / (b) >= 1.5: parsing in parallel off the event loop,
overlapped with fetching and storing, should beat one core of mail-parser by half again.

bench/README.md explains every figure and holds the last measured table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Only the standard library at import time: the daemon's parser pool uses "spawn", which
# re-imports this module in every worker, and the workers must stay as lean as in production.

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_ENV = "MAILD_BENCH_POSTGRES_URL"
USER, PASSWORD, FOLDER = "bench", "bench-pw", "Bench"
SEED = 20261123
TARGET = 1.5
FETCH_CHUNK = 150  # letters per UID FETCH, the same as maild's BODY_CHUNK
MB = 1024 * 1024

# (share of letters, smallest, largest) in bytes; sizes are log-uniform inside a band
SIZE_BANDS = ((0.85, 1_000, 20_000), (0.14, 20_000, 300_000), (0.01, 300_000, 5_000_000))
BAND_NAMES = ("1-20 KB", "20-300 KB", "0.3-5 MB")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def vm_hwm(pid: int | str = "self") -> int | None:
    """Give a process's own peak RSS in KB (VmHWM), which, unlike ru_maxrss, exec resets."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss() -> dict[str, Any]:
    """Give ru_maxrss (KB on Linux) of this process and of its waited-for children, and VmHWM."""
    return {
        "rss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "rss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "hwm_self_kb": vm_hwm(),
    }


class ChildPeaks(threading.Thread):
    """Sample the VmHWM of this process's children (maild's parser workers) while they live.

    A child's ru_maxrss starts from its parent's peak at the moment of the fork (Linux keeps it
    across exec), so RUSAGE_CHILDREN over-states workers started by a big process; VmHWM is
    the child's own figure.
    """

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(name="child-peaks", daemon=True)
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Read the VmHWM of every current child, found by its parent pid in /proc."""
        me = os.getpid()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                hwm = vm_hwm(entry.name)
                if hwm is not None:
                    self.peaks[entry.name] = max(self.peaks.get(entry.name, 0), hwm)

    def stop(self) -> int | None:
        """Stop sampling and give the largest child's VmHWM."""
        self._done.set()
        self.join()
        return max(self.peaks.values(), default=None)


# A lean process that starts every phase: a child's ru_maxrss starts from its parent's peak,
# so phases must not be started by the main process once it has generated letters.
LAUNCHER = """
import json, subprocess, sys
for line in sys.stdin:
    job = json.loads(line)
    with open(job["log"], "wb") as out:
        code = subprocess.run(job["argv"], env=job["env"], stdout=out, stderr=out).returncode
    sys.stdout.write(json.dumps({"rc": code}) + "\\n")
    sys.stdout.flush()
"""


class Launcher:
    """Run phase subprocesses from the lean launcher process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def run(self, argv: list[str], env: dict[str, str], log_file: Path) -> int:
        """Run one command to its end, its output going to ``log_file``; give its exit code."""
        assert self.process.stdin is not None and self.process.stdout is not None
        job = {"argv": argv, "env": env, "log": str(log_file)}
        self.process.stdin.write(json.dumps(job).encode() + b"\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the launcher process died")
        return int(json.loads(answer)["rc"])

    def close(self) -> None:
        """End the launcher."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


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


def make_letter(seed_value: int, index: int, band: int, target: int) -> bytes:
    """Compose letter ``index`` so that its real size lands in its band, near ``target``.

    random_letter overshoots small sizes (non-ASCII text goes out as base64, every third letter
    also has an HTML part), so the size asked for is corrected from what came out, at most a
    few times. Each letter has its own seeded generator, so a run of N letters is the prefix of
    a run of more.
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


def to_crlf(raw: bytes) -> bytes:
    """Give a letter CRLF line ends, as IMAP serves it, so seeded bytes are fetched bytes."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def read_spool(path: Path) -> Iterator[bytes]:
    """Read back the letters the fetch phase saved, one at a time."""
    with open(path, "rb") as spool:
        while header := spool.read(8):
            (length,) = struct.unpack(">Q", header)
            yield spool.read(length)


def rate(count: float, seconds: float) -> float:
    """Divide, giving 0 for a phase that took no time."""
    return count / seconds if seconds > 0 else 0.0


def kb(value: int | None) -> str:
    """Format a KB figure with thousands separators."""
    return "-" if value is None else f"{value:,}"


def log(message: str) -> None:
    """Print a progress line at once."""
    print(message, flush=True)


# --------------------------------------------------------------------------------------------
# Phase workers (each runs in its own subprocess)
# --------------------------------------------------------------------------------------------


def phase_fetch(spec: dict[str, Any]) -> dict[str, Any]:
    """(a) Fetch every letter with stdlib imaplib and save the bytes for the parse phase."""
    import imaplib

    literal = re.compile(rb"UID (\d+)")
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
            seconds += time.perf_counter() - began  # only the IMAP round trip is timed
            assert typ == "OK", (typ, data[-1:])
            got = 0
            for item in data:
                if isinstance(item, tuple) and literal.search(item[0]):
                    body = item[1]
                    spool.write(struct.pack(">Q", len(body)))
                    spool.write(body)
                    got += 1
                    total += len(body)
            if got != len(wanted):
                raise RuntimeError(f"UID FETCH gave {got} letters for {len(wanted)} UIDs")
            letters += got
    conn.logout()
    return {"letters": letters, "bytes": total, "seconds": seconds, **peak_rss()}


def phase_parse(spec: dict[str, Any]) -> dict[str, Any]:
    """(b) Parse every fetched letter with mail-parser, in this process, on one core."""
    from maild.errors import ParseError
    from maild.ingest.parse import parse_letter

    letters = total = failed = 0
    seconds = 0.0
    bands = [[0, 0, 0.0] for _ in SIZE_BANDS]  # letters, bytes, seconds per size band
    for raw in read_spool(Path(spec["spool"])):
        began = time.perf_counter()
        try:
            parse_letter(raw)
        except ParseError:
            failed += 1
        spent = time.perf_counter() - began  # reading the spool is not timed
        seconds += spent
        letters += 1
        total += len(raw)
        band = bands[band_of(len(raw))]
        band[0] += 1
        band[1] += len(raw)
        band[2] += spent
    return {
        "letters": letters,
        "bytes": total,
        "seconds": seconds,
        "failed": failed,
        "bands": bands,
        **peak_rss(),
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
                    select(Letter.status, func.count(), func.sum(Letter.size)).group_by(
                        Letter.status
                    )
                )
                by_status = {str(s): int(n) for s, n, _ in rows.all()}
                size = await session.execute(select(func.sum(Letter.size)))
                attachments = await session.execute(
                    select(func.count()).select_from(Attachment)
                )
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
            "daemon": {"health_listen": "", "first_sync": "record"},
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
                }
            ],
        }
    )
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
    workers = ChildPeaks()
    workers.start()
    began = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = asyncio.run(Daemon(config).run(once=True))
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - began
    rss = {**peak_rss(), "hwm_children_kb": workers.stop()}  # before the count below
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    counted = asyncio.run(count())
    return {
        "ok": result.ok,
        "seconds": seconds,
        "parse_workers": config.daemon.parse_workers or os.cpu_count(),
        **counted,
        **rss,
    }


PHASES = {"fetch": phase_fetch, "parse": phase_parse, "daemon": phase_daemon}


def run_phase(launcher: Launcher, name: str, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one phase in a fresh interpreter and give its JSON result."""
    result_file = workdir / f"{name}-{uuid.uuid4().hex[:8]}.json"
    log_file = workdir / f"{name}-{spec.get('label', name)}.log"
    env = {k: v for k, v in os.environ.items() if k != "MAILD_DATABASE_URL"}  # no override
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, str(Path(__file__).resolve()), "--phase", name, json.dumps(spec),
            str(result_file)]
    code = launcher.run(argv, env, log_file)
    if code != 0 or not result_file.exists():
        tail = log_file.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"phase {name} failed ({code}):\n" + "\n".join(tail))
    return dict(json.loads(result_file.read_text()))


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
    stats.update(peak_rss())
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


async def pg_admin(url: str, sql: str) -> None:
    """Run one statement on the PostgreSQL server's maintenance connection."""
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


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
        "profile": str(Path(args.profile) / f"daemon-{label}.prof") if args.profile else None,
    }
    return run_phase(launcher, "daemon", spec, workdir)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def report(
    seeded: dict[str, Any],
    fetched: dict[str, Any],
    parsed: dict[str, Any],
    daemons: dict[str, dict[str, Any]],
) -> None:
    """Print the final table and the ratio (c)/(b) against the target."""
    cores = os.cpu_count() or 1
    mbytes = fetched["bytes"] / MB
    a_rate = rate(fetched["letters"], fetched["seconds"])
    b_rate = rate(parsed["letters"], parsed["seconds"])
    b_mb = rate(mbytes, parsed["seconds"])
    rows: list[tuple[str, str, float | None, float, float, dict[str, Any]]] = [
        ("seed: generate+APPEND", "stdlib imaplib MULTIAPPEND", seeded["seconds"],
         rate(seeded["letters"], seeded["seconds"]), rate(seeded["bytes"] / MB, seeded["seconds"]),
         seeded),
        ("(a) fetch", "stdlib imaplib", fetched["seconds"], a_rate,
         rate(mbytes, fetched["seconds"]), fetched),
        ("(b) parse", "mail-parser, 1 core", parsed["seconds"], b_rate, b_mb, parsed),
        (f"(b) x {cores} cores", "mail-parser, limit", None, b_rate * cores, b_mb * cores, {}),
    ]
    for label, d in daemons.items():
        rows.append((f"(c) maild, {label}", "maild fetch+parse+store", d["seconds"],
                     rate(d["rows"], d["seconds"]), rate(mbytes, d["seconds"]), d))

    log("")
    log(f"== Results: {fetched['letters']:,} letters, {mbytes:,.1f} MB as served by IMAP, "
        f"{cores} cores (os.cpu_count()), {datetime.now(UTC):%Y-%m-%d}")
    header = (f"{'phase':<22} {'peer / what':<27} {'seconds':>8} {'letters/s':>10} {'MB/s':>7} "
              f"{'maxrss KB':>10} {'child maxrss':>12} {'VmHWM KB':>9} {'worker HWM':>10}")
    log(header)
    log("-" * len(header))
    for name, peer, seconds, per_s, mb_s, d in rows:
        secs = "-" if seconds is None else f"{seconds:.2f}"
        log(f"{name:<22} {peer:<27} {secs:>8} {per_s:>10,.1f} {mb_s:>7.2f} "
            f"{kb(d.get('rss_self_kb')):>10} {kb(d.get('rss_children_kb')):>12} "
            f"{kb(d.get('hwm_self_kb')):>9} {kb(d.get('hwm_children_kb')):>10}")
    log("")
    log("maxrss / child maxrss: resource.getrusage(RUSAGE_SELF / RUSAGE_CHILDREN).ru_maxrss of the")
    log("phase's own process (for (c): maild's process; children: its largest parser worker).")
    log("VmHWM / worker HWM: the same peaks from /proc, which do not inherit the parent's peak the")
    log("way a child's ru_maxrss does. Dovecot's memory is in none of them.")
    log("")
    for label, d in daemons.items():
        c_rate = rate(d["rows"], d["seconds"])
        ratio = rate(c_rate, b_rate)
        verdict = "meets" if ratio >= TARGET else "BELOW"
        log(f"(c)/(b) {label:<10}: {c_rate:,.1f} / {b_rate:,.1f} letters/s = {ratio:.2f}, "
            f"{verdict} the target {TARGET} ({cores} cores); (c) is "
            f"{rate(c_rate, b_rate * cores):.0%} of the {cores}-core mail-parser limit and "
            f"{rate(c_rate, a_rate):.1%} of stdlib imaplib's fetch rate")


def print_phase(name: str, result: dict[str, Any], mbytes: float) -> None:
    """Print one phase's line as soon as it is done."""
    log(f"   {result['letters'] if 'letters' in result else result['rows']:,} letters, "
        f"{mbytes:,.1f} MB in {result['seconds']:.2f} s: "
        f"{rate(result.get('letters', result.get('rows', 0)), result['seconds']):,.1f} letters/s, "
        f"{rate(mbytes, result['seconds']):.2f} MB/s")
    line = (f"   peak RSS (ru_maxrss): self {kb(result['rss_self_kb'])} KB, children "
            f"{kb(result['rss_children_kb'])} KB; own peak (VmHWM): self "
            f"{kb(result['hwm_self_kb'])} KB")
    if "hwm_children_kb" in result:
        line += f", largest parser worker {kb(result['hwm_children_kb'])} KB"
    log(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--letters", type=int, default=10_000, help="letters to seed (10000)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(PG_ENV, DEFAULT_PG),
        help=f"PostgreSQL server to make a throwaway database on (env {PG_ENV}, "
        f"default {DEFAULT_PG})",
    )
    parser.add_argument("--skip-postgres", action="store_true", help="measure (c) on SQLite only")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed ({SEED})")
    parser.add_argument("--log-level", default="INFO",
                        help="maild's log level during (c); INFO is what `maild run` uses")
    parser.add_argument("--profile", metavar="DIR",
                        help="cProfile each (c) run into DIR/daemon-<db>.prof (slows it down)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--phase", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # a worker subprocess
        name, spec, result_file = args.phase
        result = PHASES[name](json.loads(spec))
        Path(result_file).write_text(json.dumps(result))
        return 0

    if args.letters < 1:
        parser.error("--letters must be at least 1")
    launcher = Launcher()  # first, while this process is still small
    from maild.testing.dovecot import DovecotServer

    if args.letters < 1:
        parser.error("--letters must be at least 1")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        args.profile = str(Path(args.profile).resolve())
    cores = os.cpu_count() or 1
    workdir = Path(tempfile.mkdtemp(prefix="maild-bench-"))
    server = DovecotServer(workdir / "dovecot", {USER: PASSWORD})
    log(f"maild ingest benchmark: {args.letters:,} letters, seed {args.seed}, {cores} cores, "
        f"Python {sys.version.split()[0]}")
    try:
        server.start()
        server.create_folder(USER, FOLDER)

        log("-- seeding: generate letters (maild.testing.samples.random_letter), APPEND to Dovecot")
        seeded = seed(server, args.letters, args.seed)
        bands = ", ".join(
            f"{name}: {n:,} ({rate(n, seeded['letters']):.1%}, {b / MB:,.1f} MB)"
            for name, (n, b) in zip(BAND_NAMES, seeded["bands"], strict=True)
        )
        log(f"   {seeded['letters']:,} letters, {seeded['bytes'] / MB:,.1f} MB "
            f"(smallest {seeded['smallest']:,} B, largest {seeded['largest']:,} B) "
            f"in {seeded['seconds']:.1f} s: generating {seeded['generate_seconds']:.1f} s, "
            f"APPEND {seeded['append_seconds']:.1f} s; peak RSS self "
            f"{kb(seeded['rss_self_kb'])} KB")
        log(f"   sizes: {bands}")
        served = warm_up(server)
        if served != seeded["bytes"]:
            log(f"   note: Dovecot reports {served:,} bytes (RFC822.SIZE) for "
                f"{seeded['bytes']:,} appended")

        spool = workdir / "letters.spool"
        imap = {"host": server.host, "port": server.port, "user": USER,
                "password": PASSWORD, "folder": FOLDER}
        log(f"-- (a) fetch: stdlib imaplib, UID FETCH BODY.PEEK[], {FETCH_CHUNK} letters a command")
        fetched = run_phase(launcher, "fetch", {**imap, "chunk": FETCH_CHUNK, "spool": str(spool)}, workdir)
        mbytes = fetched["bytes"] / MB
        print_phase("fetch", fetched, mbytes)
        if fetched["letters"] != args.letters:
            raise RuntimeError(f"imaplib fetched {fetched['letters']} of {args.letters} letters")

        log("-- (b) parse: maild.ingest.parse.parse_letter (mail-parser) in one process, one core")
        parsed = run_phase(launcher, "parse", {"spool": str(spool)}, workdir)
        print_phase("parse", parsed, mbytes)
        b_rate = rate(parsed["letters"], parsed["seconds"])
        log(f"   implied limit on {cores} cores: {b_rate * cores:,.1f} letters/s, "
            f"{rate(mbytes, parsed['seconds']) * cores:.2f} MB/s; "
            f"{parsed['failed']} letters raised ParseError")
        for name, (n, b, s) in zip(BAND_NAMES, parsed["bands"], strict=True):
            if n:
                log(f"   {name:>9}: {n:6,} letters {b / MB:8.1f} MB  {s:7.2f} s parse "
                    f"({rate(s, parsed['seconds']):.0%} of the time), {rate(n, s):8,.1f} letters/s, "
                    f"{rate(b / MB, s):6.2f} MB/s")
        spool.unlink()

        daemons: dict[str, dict[str, Any]] = {}
        targets = [("SQLite", None)]
        if not args.skip_postgres:
            targets.append(("PostgreSQL", args.postgres_url))
        for label, pg_base in targets:
            log(f"-- (c) maild end to end on {label}: Daemon(config).run(once=True), "
                f"first_sync=record")
            if pg_base is None:
                d = end_to_end(launcher, "sqlite", f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
                               server, workdir, args)
            else:
                from sqlalchemy.engine import make_url

                name = f"maild_bench_{uuid.uuid4().hex[:10]}"
                asyncio.run(pg_admin(pg_base, f'CREATE DATABASE "{name}"'))
                try:
                    url = make_url(pg_base).set(database=name).render_as_string(
                        hide_password=False
                    )
                    d = end_to_end(launcher, "postgresql", url, server, workdir, args)
                finally:
                    asyncio.run(pg_admin(pg_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            daemons[label] = d
            print_phase(label, d, mbytes)
            check = "OK" if d["rows"] == args.letters and d["ok"] else "MISMATCH"
            log(f"   rows in letters: {d['rows']:,} (expected {args.letters:,}: {check}); "
                f"by status {d['by_status']}; attachments {d['attachments']:,}; "
                f"sum(size) {d['row_bytes']:,} B; run ok={d['ok']}; "
                f"parse_workers={d['parse_workers']}")
            if d["rows"] != args.letters or not d["ok"]:
                raise RuntimeError(f"maild stored {d['rows']} rows of {args.letters} on {label}")
        report(seeded, fetched, parsed, daemons)
        if args.profile:
            log(f"\ncProfile data: {args.profile}/daemon-*.prof (figures above are slowed by it)")
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
