"""Ingest benchmark: how fast maild brings a mailbox into the database, against its peers.

Run by hand (it is not a test)::

    .venv/bin/python bench/ingest.py [--letters 10000] [--postgres-url URL] [--skip-postgres]

One run seeds a throwaway Dovecot folder with N realistic letters (deterministic seed, sizes
from 1 KB to 5 MB, skewed towards small ones) and then measures, on exactly those letters:

(a)  fetch   stdlib ``imaplib``: ``UID FETCH BODY.PEEK[]``, 150 letters a command;
(b)  parse   mail-parser alone, through ``maild.ingest.parse.parse_letter``, in one process
             on one core; (b) x ``os.cpu_count()`` is the limit that implies on every core;
(b') parse   the same, measured on every core: one process per core side by side;
(c)  maild   ``Daemon(config).run(once=True)`` with ``first_sync = "record"``: fetch, parse
             and store, on a fresh SQLite file and on a fresh PostgreSQL database.

Every measured phase runs in its own subprocess, started by a small launcher process, so each
peak RSS figure is that phase's own. maild is held to (c) / (b) >= 1.5: parsing in parallel
off the event loop, overlapped with fetching and storing, should beat one core of
mail-parser by half again. bench/README.md explains every figure.
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
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# (share of letters, smallest, largest) in bytes; sizes are log-uniform inside a band
SIZE_BANDS = ((0.85, 1_000, 20_000), (0.14, 20_000, 300_000), (0.01, 300_000, 5_000_000))
BAND_NAMES = ("1-20 KB", "20-300 KB", "0.3-5 MB")


# --------------------------------------------------------------------------------------------
# Measuring helpers
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


def usage() -> dict[str, Any]:
    """Give ru_maxrss (KB on Linux) and CPU seconds of this process and its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "rss_self_kb": me.ru_maxrss,
        "rss_children_kb": children.ru_maxrss,
        "hwm_self_kb": vm_hwm(),
        "cpu_self": me.ru_utime + me.ru_stime,
        "cpu_children": children.ru_utime + children.ru_stime,
    }


def machine_busy() -> float | None:
    """Give the CPU seconds every process on the machine has used so far (from /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / TICK


def _task_cpu(path: str) -> float | None:
    """Read utime + stime of a process or thread from its stat file, in seconds."""
    try:
        with open(path, "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def _thread_kind(thread: threading.Thread) -> str:
    """Name the part of maild a thread of its process belongs to."""
    if thread is threading.main_thread():
        return "event loop"
    if type(thread).__name__ == "_ExecutorManagerThread" or thread.name == "QueueFeederThread":
        return "parser pool threads"
    if "_connection_worker_thread" in thread.name:
        return "aiosqlite thread"
    return "other or ended threads"


class Sampler(threading.Thread):
    """Watch maild's process while it runs: CPU per thread, and its children's own peak RSS.

    A child's ru_maxrss starts from its parent's peak at the moment of the fork (Linux keeps it
    across exec), so RUSAGE_CHILDREN over-states parser workers started by a big process;
    their VmHWM, read here while they live, is their own figure.
    """

    def __init__(self, interval: float = 0.2, child_every: int = 2) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.interval = interval
        self.child_every = child_every
        self.child_peaks: dict[str, int] = {}
        self.threads: dict[int, tuple[str, float]] = {}  # native id -> (kind, CPU seconds)
        self.baseline: dict[int, float] = {}
        self._done = threading.Event()
        self._sample_threads(into=self.baseline)

    def run(self) -> None:
        ticks = 0
        while not self._done.wait(self.interval):
            self._sample_threads()
            ticks += 1
            if ticks % self.child_every == 0:
                self._sample_children()

    def _sample_threads(self, into: dict[int, float] | None = None) -> None:
        """Read the CPU time of every thread of this process."""
        for thread in threading.enumerate():
            if thread.native_id is None or thread is self:
                continue
            seconds = _task_cpu(f"/proc/self/task/{thread.native_id}/stat")
            if seconds is None:
                continue
            if into is not None:
                into[thread.native_id] = seconds
            else:
                self.threads[thread.native_id] = (_thread_kind(thread), seconds)

    def _sample_children(self) -> None:
        """Read the VmHWM of every current child, found by its parent pid in /proc."""
        me = os.getpid()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) < me:
                continue  # children get pids after ours (a wrap-around is ignored)
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == me:
                hwm = vm_hwm(entry.name)
                if hwm is not None:
                    self.child_peaks[entry.name] = max(self.child_peaks.get(entry.name, 0), hwm)

    def stop(self) -> tuple[dict[str, float], int | None]:
        """Stop; give CPU seconds by thread kind since the start, and the largest child's VmHWM."""
        self._done.set()
        self.join()
        self._sample_threads()
        by_kind: dict[str, float] = {}
        for native_id, (kind, seconds) in self.threads.items():
            spent = seconds - self.baseline.get(native_id, 0.0)
            by_kind[kind] = by_kind.get(kind, 0.0) + spent
        return by_kind, max(self.child_peaks.values(), default=None)


# A lean process that starts every phase: a child's ru_maxrss starts from its parent's peak,
# so phases must not be started by the main process once it has generated letters. Each line
# in is a list of jobs run side by side; each line out is their exit codes.
LAUNCHER = """
import json, subprocess, sys
for line in sys.stdin:
    jobs = json.loads(line)
    outs = [open(job["log"], "wb") for job in jobs]
    procs = [subprocess.Popen(job["argv"], env=job["env"], stdout=out, stderr=out)
             for job, out in zip(jobs, outs)]
    codes = [proc.wait() for proc in procs]
    for out in outs:
        out.close()
    sys.stdout.write(json.dumps(codes) + "\\n")
    sys.stdout.flush()
"""


class Launcher:
    """Run phase subprocesses from the lean launcher process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def run(self, jobs: list[dict[str, Any]]) -> list[int]:
        """Run commands side by side to their end; give their exit codes."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(jobs).encode() + b"\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the launcher process died")
        return [int(code) for code in json.loads(answer)]

    def close(self) -> None:
        """End the launcher."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def run_phases(
    launcher: Launcher, name: str, specs: list[dict[str, Any]], workdir: Path
) -> list[dict[str, Any]]:
    """Run one phase in fresh interpreters (several side by side) and give their JSON results."""
    env = {k: v for k, v in os.environ.items() if k != "MAILD_DATABASE_URL"}  # no override
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    jobs, results = [], []
    for spec in specs:
        tag = f"{name}-{spec.get('label', 'run')}-{uuid.uuid4().hex[:6]}"
        result_file, log_file = workdir / f"{tag}.json", workdir / f"{tag}.log"
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--phase",
            name,
            json.dumps(spec),
            str(result_file),
        ]
        jobs.append({"argv": argv, "env": env, "log": str(log_file)})
        results.append((result_file, log_file))
    codes = launcher.run(jobs)
    out = []
    for code, (result_file, log_file) in zip(codes, results, strict=True):
        if code != 0 or not result_file.exists():
            tail = log_file.read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(f"phase {name} failed ({code}):\n" + "\n".join(tail))
        out.append(dict(json.loads(result_file.read_text())))
    return out


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


def rate(count: float, seconds: float) -> float:
    """Divide, giving 0 for a phase that took no time."""
    return count / seconds if seconds > 0 else 0.0


def kb(value: int | None) -> str:
    """Format a KB figure with thousands separators."""
    return "-" if value is None else f"{value:,}"


def log(message: str = "") -> None:
    """Print a progress line at once."""
    print(message, flush=True)


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
    """(b) Parse the fetched letters (every ``parts``-th one) with mail-parser, in this process."""
    from maild.errors import ParseError
    from maild.ingest.parse import parse_letter

    part, parts = spec.get("part", 0), spec.get("parts", 1)
    letters = total = failed = 0
    seconds = 0.0
    first = last = 0.0
    bands = [[0, 0, 0.0] for _ in SIZE_BANDS]  # letters, bytes, seconds per size band
    before = usage()
    for index, raw in enumerate(read_spool(Path(spec["spool"]))):
        if index % parts != part:
            continue
        began = time.monotonic()  # one clock for all processes, to find the common window
        first = first or began
        try:
            parse_letter(raw)
        except ParseError:
            failed += 1
        last = time.monotonic()
        spent = last - began  # reading the spool is not timed
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
                "first_sync": "record",
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
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    measured = {
        **after,
        "hwm_children_kb": worker_hwm,
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
        "parse",
        [
            {"label": f"{part}of{parts}", "spool": str(spool), "part": part, "parts": parts}
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
        "profile": (
            str(Path(args.profile) / f"daemon-{label}-{uuid.uuid4().hex[:4]}.prof")
            if args.profile
            else None
        ),
    }
    return run_phases(launcher, "daemon", [spec], workdir)[0]


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
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of (b), (b') and (c), alternating; the table shows medians",
    )
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
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--phase", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # a worker subprocess
        name, spec, result_file = args.phase
        result = PHASES[name](json.loads(spec))
        Path(result_file).write_text(json.dumps(result))
        return 0

    if args.letters < 1 or args.repeat < 1:
        parser.error("--letters and --repeat must be at least 1")
    from maild.testing.postgres import pg_admin  # not at import time: see the note at the top

    if not args.skip_postgres:  # fail before the minutes of seeding, not after
        try:
            asyncio.run(pg_admin(args.postgres_url, "SELECT 1"))
        except Exception as exc:
            parser.error(
                f"PostgreSQL at --postgres-url is not usable ({type(exc).__name__}: "
                f"{exc}); pass --skip-postgres to measure SQLite only"
            )
    launcher = Launcher()  # first, while this process is still small
    from maild.testing.dovecot import DovecotServer

    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        args.profile = str(Path(args.profile).resolve())
    cores = os.cpu_count() or 1
    workdir = Path(tempfile.mkdtemp(prefix="maild-bench-"))
    server = DovecotServer(workdir / "dovecot", {USER: PASSWORD})
    log(
        f"maild ingest benchmark: {args.letters:,} letters, seed {args.seed}, {cores} cores, "
        f"Python {sys.version.split()[0]}"
    )
    try:
        server.start()
        server.create_folder(USER, FOLDER)

        log("-- seeding: generate letters (maild.testing.samples.random_letter), APPEND to Dovecot")
        seeded = seed(server, args.letters, args.seed)
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
        served = warm_up(server)
        if served != seeded["bytes"]:
            log(
                f"   note: Dovecot reports {served:,} bytes (RFC822.SIZE) for "
                f"{seeded['bytes']:,} appended"
            )

        spool = workdir / "letters.spool"
        imap = {
            "host": server.host,
            "port": server.port,
            "user": USER,
            "password": PASSWORD,
            "folder": FOLDER,
        }
        log(
            f"-- (a) fetch: stdlib imaplib, UID FETCH BODY.PEEK[], {FETCH_CHUNK} letters a "
            f"command, one connection"
        )
        fetched = run_phases(
            launcher, "fetch", [{**imap, "chunk": FETCH_CHUNK, "spool": str(spool)}], workdir
        )[0]
        mbytes = fetched["bytes"] / MB
        print_rate(fetched, fetched["letters"], mbytes)
        print_rss(fetched)
        if fetched["letters"] != args.letters:
            raise RuntimeError(f"imaplib fetched {fetched['letters']} of {args.letters} letters")

        parses: list[dict[str, Any]] = []
        parallels: list[dict[str, Any]] = []
        daemons: dict[str, list[dict[str, Any]]] = {"SQLite": []}
        if not args.skip_postgres:
            daemons["PostgreSQL"] = []
        for round_no in range(1, args.repeat + 1):
            if args.repeat > 1:
                log(f"== round {round_no} of {args.repeat}")
            log(
                "-- (b) parse: maild.ingest.parse.parse_letter (mail-parser), one process, one core"
            )
            parses.append(measure_parse(launcher, spool, workdir, 1))
            print_parse(parses[-1], mbytes, None)
            if cores > 1:
                log(
                    f"-- (b') parse on every core: {cores} processes side by side, each "
                    f"parsing one letter in {cores}"
                )
                parallels.append(measure_parse(launcher, spool, workdir, cores))
                print_parse(parallels[-1], mbytes, parses[-1])
            for label, runs in daemons.items():
                log(
                    f"-- (c) maild end to end on {label}: Daemon(config).run(once=True), "
                    f"first_sync=record"
                )
                if label == "SQLite":
                    db = workdir / f"bench-{round_no}.db"
                    d = end_to_end(
                        launcher, "sqlite", f"sqlite+aiosqlite:///{db}", server, workdir, args
                    )
                    for leftover in workdir.glob(f"{db.name}*"):
                        leftover.unlink()
                else:
                    from sqlalchemy.engine import make_url

                    name = f"maild_bench_{uuid.uuid4().hex[:10]}"
                    asyncio.run(pg_admin(args.postgres_url, f'CREATE DATABASE "{name}"'))
                    try:
                        url = (
                            make_url(args.postgres_url)
                            .set(database=name)
                            .render_as_string(hide_password=False)
                        )
                        d = end_to_end(launcher, "postgresql", url, server, workdir, args)
                    finally:
                        asyncio.run(
                            pg_admin(
                                args.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                            )
                        )
                runs.append(d)
                print_daemon(d, args.letters, mbytes)
                if d["rows"] != args.letters or not d["ok"]:
                    raise RuntimeError(
                        f"maild stored {d['rows']} rows of {args.letters} on {label}"
                    )
        spool.unlink()
        report(seeded, fetched, parses, parallels, daemons)
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
