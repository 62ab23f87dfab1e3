"""Push latency: from the APPEND of one letter to its ``letters`` row committed by maild.

Run by hand (it is not a test)::

    .venv/bin/python bench/push.py [--letters 100] [--backlog 5000] [--skip-postgres] [--quick]

maild runs as ``maild run`` does (its own process, IDLE on every folder) on a throwaway
Dovecot with two accounts: ``push`` and ``backlog``. One letter at a time is APPENDed to
push's folder; each gets two times, both from the moment just before the APPEND was sent:

- the **reference**: a bare client (a raw socket in its own process, logged in, SELECT, IDLE)
  reading the server's ``* N EXISTS`` for it: Dovecot's own push latency. Like maild, it
  leaves IDLE after each EXISTS (DONE, NOOP) and enters it again, as a client that acts on
  the news must; Dovecot then reports the next APPEND about 0.5 s after it, every time. A
  second bare client that never leaves IDLE, printed beside, often hears sooner;
- **maild**: a watcher (its own process) seeing the letter's row in ``letters``: on SQLite by
  reading the file every millisecond, on PostgreSQL by a row trigger whose NOTIFY is
  delivered at commit (LISTEN), so there is no polling at all.

First with nothing else going on (quiet), then while a backlog of N letters APPENDed to the
other account is being ingested (head-of-line blocking: a busy account must not hold up
another one's new letter). maild is held to adding at most 20 ms at p50 and 100 ms at p99.
Every clock is CLOCK_MONOTONIC, shared by the processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import (
    DB_LABEL,
    DaemonProcess,
    account_entry,
    add_common_options,
    database,
    databases,
    figure,
    finish,
    free_port,
    log,
    maild_config,
    percentile,
    phase_env,
    synced_folders,
    wait_until,
)
from ingest import make_letter, read_spool, to_crlf, wanted_size

PUSH, BACKLOG = "push", "backlog"
PASSWORD = "bench-pw"
SEED = 20261124
WARM_UP = 3
GAP = 0.05  # seconds between two measured letters, so each is measured on its own
P50_TARGET, P99_TARGET = 20.0, 100.0
POLL = 0.001  # the SQLite watcher's period
NOTIFY_SQL = """
CREATE OR REPLACE FUNCTION bench_letter_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('bench_letters', NEW.folder_id::text || ' ' || NEW.uid::text);
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER bench_letter_notify AFTER INSERT ON letters
  FOR EACH ROW EXECUTE FUNCTION bench_letter_notify();
"""


# --------------------------------------------------------------------------------------------
# The two observers, each in its own process: lines "EVENT VALUE MONOTONIC" on stdout
# --------------------------------------------------------------------------------------------


def idle_client(spec: dict[str, Any]) -> None:
    """Log in, SELECT, IDLE, and print every ``* N EXISTS`` with the time it was read.

    With ``reidle``, the client leaves IDLE after each EXISTS (DONE, NOOP) and enters it
    again, as any client that acts on the news must (maild does, to fetch); without it, it
    never leaves IDLE. Dovecot tells the two apart: see bench/README.md.
    """
    sock = socket.create_connection((spec["host"], spec["port"]))
    reader = sock.makefile("rb")
    reader.readline()  # greeting
    exists = re.compile(rb"^\* (\d+) EXISTS")

    def answer(tag: bytes) -> bytes:
        """Read up to the tagged answer, printing any EXISTS on the way."""
        while not (line := reader.readline()).startswith(tag + b" "):
            if not line:
                raise SystemExit("the server closed the connection")
            if match := exists.match(line):
                print(f"exists {int(match.group(1))} {time.monotonic():.6f}", flush=True)
        return line

    def command(tag: bytes, text: str) -> None:
        sock.sendall(tag + b" " + text.encode() + b"\r\n")
        if not (line := answer(tag)).startswith(tag + b" OK"):
            raise SystemExit(f"{text.split(maxsplit=1)[0]} failed: {line!r}")

    command(b"a", f"LOGIN {spec['user']} {spec['password']}")
    command(b"b", f'SELECT "{spec["folder"]}"')
    rounds = 0
    while True:
        rounds += 1
        sock.sendall(b"i%d IDLE\r\n" % rounds)
        while line := reader.readline():
            now = time.monotonic()
            if line.startswith(b"+") and rounds == 1:
                print("ready 0 0", flush=True)
            elif match := exists.match(line):
                print(f"exists {int(match.group(1))} {now:.6f}", flush=True)
                if spec["reidle"]:
                    break
        else:
            raise SystemExit("the server closed the connection")
        sock.sendall(b"DONE\r\n")
        answer(b"i%d" % rounds)
        command(b"n%d" % rounds, "NOOP")


def watch_sqlite(spec: dict[str, Any]) -> None:
    """Read the newest UID of each folder every millisecond; print when it moves."""
    import sqlite3

    conn = sqlite3.connect(spec["path"], timeout=30, isolation_level=None)
    ids = {int(folder_id): role for role, folder_id in spec["folders"].items()}
    newest = dict.fromkeys(ids, 0)
    print("ready 0 0", flush=True)
    query = "SELECT max(uid) FROM letters WHERE folder_id = ?"
    while True:
        for folder_id, role in ids.items():
            uid = conn.execute(query, (folder_id,)).fetchone()[0] or 0
            if uid > newest[folder_id]:
                newest[folder_id] = uid
                print(f"{role} {uid} {time.monotonic():.6f}", flush=True)
        time.sleep(POLL)


def watch_postgres(spec: dict[str, Any]) -> None:
    """LISTEN for the row trigger's NOTIFY, which PostgreSQL delivers when the row commits."""
    import asyncio

    ids = {int(folder_id): role for role, folder_id in spec["folders"].items()}
    newest = dict.fromkeys(ids, 0)

    def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        now = time.monotonic()
        folder_id, uid = (int(x) for x in payload.split())
        if folder_id in ids and uid > newest[folder_id]:
            newest[folder_id] = uid
            print(f"{ids[folder_id]} {uid} {now:.6f}", flush=True)

    async def watch() -> None:
        conn = await pg_connect(spec["url"])
        await conn.add_listener("bench_letters", heard)
        print("ready 0 0", flush=True)
        await asyncio.Event().wait()

    asyncio.run(watch())


async def pg_connect(url: str) -> Any:
    """Open a plain asyncpg connection to the database a SQLAlchemy URL names."""
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )


def prepare_watch(kind: str, url: str, folders: dict[str, str]) -> dict[str, int]:
    """Find the folders' ids maild gave them; on PostgreSQL also add the NOTIFY trigger."""
    query = "SELECT name, id FROM folders"
    if kind == "sqlite":
        import sqlite3

        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as conn:
            found = dict(conn.execute(query).fetchall())
    else:
        import asyncio

        async def prepare() -> dict[str, int]:
            conn = await pg_connect(url)
            try:
                await conn.execute(NOTIFY_SQL)
                return {row["name"]: row["id"] for row in await conn.fetch(query)}
            finally:
                await conn.close()

        found = asyncio.run(prepare())
    return {role: int(found[folder]) for role, folder in folders.items()}


def sqlite_path(url: str) -> str:
    """Give the file of a ``sqlite+aiosqlite:///PATH`` URL."""
    return url.split(":///", 1)[1]


class Observer:
    """One observer process and the events it printed, waited for from the main process."""

    def __init__(self, role: str, spec: dict[str, Any], log_file: Path) -> None:
        self.events: dict[str, list[tuple[int, float]]] = {}
        self._changed = threading.Condition()
        self._log = open(log_file, "wb")  # noqa: SIM115  closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, __file__, role, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=phase_env(),
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait("ready", 0, timeout=60)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event, value, when = line.decode().split()
            with self._changed:
                self.events.setdefault(event, []).append((int(value), float(when)))
                self._changed.notify_all()

    def wait(self, event: str, value: int, timeout: float) -> float:
        """Wait for an event of at least ``value``; give the time it was seen."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for seen, when in self.events.get(event, []):
                    if seen >= value:
                        return when
                if self.process.poll() is not None:
                    raise RuntimeError(f"the {event} observer exited")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {event} {value} within {timeout:g} s")
                self._changed.wait(left)

    def last(self, event: str) -> int:
        """Give the highest value of an event seen so far."""
        with self._changed:
            return max((v for v, _ in self.events.get(event, [])), default=0)

    def stop(self) -> None:
        """End the observer process."""
        self.process.kill()
        self.process.wait()
        self._log.close()


# --------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------


def backlog_spool(path: Path, count: int) -> int:
    """Generate the backlog letters once (ingest's size mix), into a spool file; give bytes."""
    import struct

    rng = random.Random(SEED)
    total = 0
    with open(path, "wb") as spool:
        for index in range(count):
            raw = make_letter(SEED, index, *wanted_size(rng))
            spool.write(struct.pack(">Q", len(raw)))
            spool.write(raw)
            total += len(raw)
    return total


def push_letter(index: int) -> bytes:
    """A small everyday letter (about 3 KB) to push."""
    from maild.testing.samples import random_letter

    return to_crlf(random_letter(random.Random(f"{SEED}:{index}"), index, 3_000))


class Pusher:
    """APPENDs letters one at a time over one connection and times both observers."""

    def __init__(
        self, server: Any, folder: str, idle: Observer, steady: Observer, rows: Observer
    ) -> None:
        self.conn = server.imap(PUSH)
        self.imap = self.conn.__enter__()
        self.folder = folder
        self.idle, self.steady, self.rows = idle, steady, rows
        self.sent = 0

    def one(self) -> tuple[float, float, float]:
        """APPEND one letter; give the latencies (re-idling client, maild, steady client) in ms."""
        raw = push_letter(self.sent)
        began = time.monotonic()
        typ, data = self.imap.append(f'"{self.folder}"', None, None, raw)
        if typ != "OK":
            raise RuntimeError(f"APPEND failed: {data!r}")
        self.sent += 1
        match = re.search(rb"APPENDUID \d+ (\d+)", data[-1] or b"")
        uid = int(match.group(1)) if match else self.sent
        seen = self.idle.wait("exists", self.sent, timeout=60)
        stored = self.rows.wait(PUSH, uid, timeout=120)
        steady = self.steady.wait("exists", self.sent, timeout=60)
        return 1000 * (seen - began), 1000 * (stored - began), 1000 * (steady - began)

    def close(self) -> None:
        """Log out."""
        self.conn.__exit__(None, None, None)


def one_round(
    server: Any, kind: str, url: str, workdir: Path, spool: Path, args: argparse.Namespace, tag: str
) -> dict[str, list[tuple[float, float, float]]]:
    """Start maild, measure quiet pushes, then pushes during a backlog; give the latencies."""
    push_folder, backlog_folder = f"Push{tag}", f"Backlog{tag}"
    server.create_folder(PUSH, push_folder)
    server.create_folder(BACKLOG, backlog_folder)
    port = free_port()
    accounts = [
        account_entry(server, PUSH, [push_folder], workdir),
        account_entry(server, BACKLOG, [backlog_folder], workdir),
    ]
    config = maild_config(url, accounts, daemon={"health_listen": f"127.0.0.1:{port}"})
    daemon = DaemonProcess(config, workdir, args.log_level)
    observers: list[Observer] = []
    pusher = None
    try:
        wait_until(lambda: daemon.check() or synced_folders(port) == 2, 120, "maild's first sync")
        folders = prepare_watch(kind, url, {PUSH: push_folder, BACKLOG: backlog_folder})
        where = {"path": sqlite_path(url)} if kind == "sqlite" else {"url": url}
        rows = Observer(f"watch-{kind}", {**where, "folders": folders}, workdir / "watch.log")
        observers.append(rows)
        client = {
            "host": server.host,
            "port": server.port,
            "user": PUSH,
            "password": PASSWORD,
            "folder": push_folder,
        }
        idle = Observer("idle-client", {**client, "reidle": True}, workdir / "idle.log")
        observers.append(idle)
        steady = Observer("idle-client", {**client, "reidle": False}, workdir / "steady.log")
        observers.append(steady)
        pusher = Pusher(server, push_folder, idle, steady, rows)
        for _ in range(WARM_UP):
            pusher.one()
            time.sleep(GAP)
        quiet = []
        for _ in range(args.letters):
            quiet.append(pusher.one())
            time.sleep(GAP)
        log(f"   quiet: {len(quiet)} letters; {summary(quiet)}")
        began = time.monotonic()
        appended = len(server.append_many(BACKLOG, backlog_folder, read_spool(spool)))
        log(
            f"   backlog: {appended:,} letters APPENDed to the other account in {time.monotonic() - began:.1f} s"
        )
        busy = []
        while len(busy) < args.letters and rows.last(BACKLOG) < appended:
            sample = pusher.one()
            if rows.last(BACKLOG) < appended:  # still ingesting when this letter was stored
                busy.append(sample)
            time.sleep(GAP)
        done = rows.wait(BACKLOG, appended, timeout=1800)
        log(
            f"   during the backlog: {len(busy)} letters; {summary(busy)}; backlog stored "
            f"{done - began:.1f} s after its APPEND began"
        )
        return {"quiet": quiet, "backlog": busy}
    finally:
        if pusher is not None:
            pusher.close()
        for observer in observers:
            observer.stop()
        daemon.stop()


def summary(samples: list[tuple[float, float, float]]) -> str:
    """Describe latencies: p50 and p99 of maild and of both bare clients."""
    if not samples:
        return "no samples"
    parts = []
    for index, name in ((1, "maild"), (0, "re-idling client"), (2, "client never leaving IDLE")):
        values = [sample[index] for sample in samples]
        parts.append(
            f"{name} p50 {percentile(values, 0.5):.1f} ms, p99 {percentile(values, 0.99):.1f} ms"
        )
    return "; ".join(parts)


def rows_for(
    kind: str, rounds: list[dict[str, list[tuple[float, float, float]]]]
) -> list[dict[str, Any]]:
    """The suite's rows for one database: p50 and p99, quiet and during the backlog."""
    out = []
    for phase, label in (("quiet", "quiet"), ("backlog", "other account ingesting a backlog")):
        for share, name, target in ((0.5, "p50", P50_TARGET), (0.99, "p99", P99_TARGET)):
            samples = [r[phase] for r in rounds if r[phase]]
            count = sum(len(s) for s in samples)
            out.append(
                figure(
                    "push",
                    f"APPEND → row committed, {name}, {label}, {DB_LABEL[kind]} ({count} letters)",
                    "ms",
                    [percentile([s[1] for s in r], share) for r in samples],
                    peer="bare client re-entering IDLE after each EXISTS: APPEND → EXISTS",
                    peer_values=[percentile([s[0] for s in r], share) for r in samples],
                    target=("diff_max", target),
                )
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--letters", type=int, help="letters pushed per phase (100; --quick 20)")
    parser.add_argument("--backlog", type=int, help="backlog letters (5000; --quick 500)")
    parser.add_argument("--log-level", default="INFO", help="maild's log level (INFO)")
    add_common_options(parser)
    args = parser.parse_args()
    args.letters = args.letters or (20 if args.quick else 100)
    args.backlog = args.backlog or (500 if args.quick else 5_000)
    kinds = databases(args)
    from maild.testing.dovecot import DovecotServer

    workdir = Path(tempfile.mkdtemp(prefix="maild-bench-push-"))
    server = DovecotServer(workdir / "dovecot", {PUSH: PASSWORD, BACKLOG: PASSWORD})
    log(f"push latency: {args.letters} letters per phase, backlog {args.backlog:,} letters")
    try:
        server.start()
        spool = workdir / "backlog.spool"
        size = backlog_spool(spool, args.backlog)
        log(f"-- backlog letters generated: {args.backlog:,}, {size / 2**20:,.1f} MB")
        results: dict[str, list[dict[str, list[tuple[float, float, float]]]]] = {
            k: [] for k in kinds
        }
        for round_no in range(1, args.repeat + 1):
            for kind in kinds:
                log(f"-- round {round_no}, {DB_LABEL[kind]}")
                with database(kind, workdir, args.postgres_url) as url:
                    results[kind].append(
                        one_round(server, kind, url, workdir, spool, args, f"{kind}{round_no}")
                    )
        finish([row for kind in kinds for row in rows_for(kind, results[kind])], args)
        return 0
    finally:
        server.close()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


ROLES = {
    "idle-client": idle_client,
    "watch-sqlite": watch_sqlite,
    "watch-postgresql": watch_postgres,
}

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ROLES:
        ROLES[sys.argv[1]](json.loads(sys.argv[2]))
    else:
        sys.exit(main())
