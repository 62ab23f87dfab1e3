"""Many mailboxes: maild watching 500 accounts x 2 folders on one Dovecot, all idling.

Run by hand (it is not a test)::

    .venv/bin/python bench/mailboxes.py [--accounts 500] [--idle-seconds 30] [--skip-postgres]

Each account's INBOX and Archive get a few small letters. maild starts (its own process, as
``maild run``) on a fresh database and syncs all 1,000 folders, then IDLEs on each. Measured:

- the time from maild's start until ``/healthz`` shows every folder read to its end (after
  which each poller is in IDLE);
- maild's memory while idling: the resident set of its process and of its parser workers,
  summed (held to 300 MB), and of its own process alone;
- maild's CPU over ``--idle-seconds`` of idling, as a share of one core (held to 2 %);
- its open files (one socket per folder).

The reference is a bare asyncio client in its own process holding the same 1,000
connections (LOGIN, SELECT, IDLE, nothing else): the floor for the time, memory and CPU of
1,000 IDLE connections in Python. Dovecot's own memory and CPU over the same idle window are
printed too, to tell whether the server is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    DB_LABEL,
    DaemonProcess,
    Launcher,
    account_entry,
    add_common_options,
    database,
    databases,
    figure,
    finish,
    free_port,
    log,
    maild_config,
    phase_entry,
    process_tree,
    run_phases,
    synced_folders,
    tree_figures,
    usage,
    vm_hwm,
    wait_until,
)

PASSWORD = "bench-pw"
FOLDERS = ("INBOX", "Archive")  # Archive is one of the special folders Dovecot creates
SEED = 20261125
RSS_TARGET_MB, CPU_TARGET = 300.0, 2.0
SCRIPT = str(Path(__file__).resolve())


def user(index: int) -> str:
    """Name the index-th account."""
    return f"box{index:04d}"


# --------------------------------------------------------------------------------------------
# The reference: a bare asyncio client holding the same connections in IDLE
# --------------------------------------------------------------------------------------------


async def _hold(spec: dict[str, Any], name: str, folder: str, idling: Any) -> None:
    """LOGIN, SELECT and IDLE on one connection, then read whatever the server says."""
    reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
    await reader.readline()
    for tag, command in ((b"a", f"LOGIN {name} {PASSWORD}"), (b"b", f'SELECT "{folder}"')):
        writer.write(tag + b" " + command.encode() + b"\r\n")
        while not (line := await reader.readline()).startswith(tag + b" "):
            if not line:
                raise ConnectionError("the server closed the connection")
        if not line.startswith(tag + b" OK"):
            raise ConnectionError(f"{command.split()[0]} failed: {line!r}")
    writer.write(b"c IDLE\r\n")
    while not (await reader.readline()).startswith(b"+"):
        pass
    idling()
    while await reader.readline():
        pass


def phase_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """Open every connection at once, time them into IDLE, then measure idling."""

    async def run() -> dict[str, Any]:
        total = spec["accounts"] * len(FOLDERS)
        all_idle = asyncio.Event()
        idle = [0]

        def idling() -> None:
            idle[0] += 1
            if idle[0] == total:
                all_idle.set()

        began = time.monotonic()
        tasks = [
            asyncio.ensure_future(_hold(spec, user(index), folder, idling))
            for index in range(spec["accounts"])
            for folder in FOLDERS
        ]
        waiter = asyncio.ensure_future(all_idle.wait())
        done, _ = await asyncio.wait(
            [waiter, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=600
        )
        if waiter not in done:
            failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
            raise RuntimeError(f"{total - idle[0]} connections not idling: {failed[:1]!r}")
        seconds = time.monotonic() - began
        cpu_before = usage()["cpu_self"]
        await asyncio.sleep(spec["idle_seconds"])
        cpu = usage()["cpu_self"] - cpu_before
        figures = tree_figures(os.getpid())
        for task in tasks:
            task.cancel()
        return {
            "seconds": seconds,
            "cpu": cpu,
            "rss_kb": figures["rss_kb"],
            "hwm_kb": vm_hwm(),
            "fds": figures["fds"],
        }

    return asyncio.run(run())


# --------------------------------------------------------------------------------------------
# maild
# --------------------------------------------------------------------------------------------


def dovecot_pids(server: Any) -> list[int]:
    """Find this Dovecot instance's processes: its master (by config file) and descendants."""
    needle = str(server.config_file).encode()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline and b"dovecot" in cmdline.split(b"\0", 1)[0]:
                return process_tree(int(entry.name))
    return []


def dovecot_figures(server: Any) -> dict[str, float]:
    """Sum RSS (KB) and CPU seconds over this Dovecot's processes."""
    from common import processes_figures

    pids = dovecot_pids(server)
    return {"processes": len(pids), **processes_figures(pids)}


def seed(server: Any, accounts: int, letters: int) -> float:
    """Put a few small letters into every watched folder; give the seconds it took."""
    from ingest import to_crlf

    from maild.testing.samples import random_letter

    began = time.monotonic()
    rng = random.Random(SEED)
    for index in range(accounts):
        for folder in FOLDERS:
            raws = [to_crlf(random_letter(rng, n, 3_000)) for n in range(letters)]
            server.append_many(user(index), folder, raws)
    return time.monotonic() - began


def measure_maild(server: Any, url: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Start maild on every folder, time its first sync, then measure it idling."""
    port = free_port()
    accounts = [
        account_entry(server, user(i), list(FOLDERS), workdir) for i in range(args.accounts)
    ]
    config = maild_config(url, accounts, daemon={"health_listen": f"127.0.0.1:{port}"})
    folders = args.accounts * len(FOLDERS)
    began = time.monotonic()
    daemon = DaemonProcess(config, workdir, args.log_level)
    try:
        seconds = wait_until(
            lambda: daemon.check() or synced_folders(port) == folders,
            1800,
            f"maild to sync {folders} folders",
            step=0.25,
        )
        seconds = time.monotonic() - began
        log(f"   maild: {folders:,} folders synced and idling {seconds:.1f} s after its start")
        time.sleep(args.settle)  # let the last syncs' work (logs, commits) finish
        before, server_before = tree_figures(daemon.pid), dovecot_figures(server)
        time.sleep(args.idle_seconds)
        after, server_after = tree_figures(daemon.pid), dovecot_figures(server)
        daemon.check()
        result = {
            "seconds": seconds,
            "cpu_share": 100 * (after["cpu"] - before["cpu"]) / args.idle_seconds,
            "rss_kb": after["rss_kb"],
            "root_rss_kb": after["root_rss_kb"],
            "processes": after["processes"],
            "fds": after["fds"],
            "dovecot_processes": server_after["processes"],
            "dovecot_rss_kb": server_after["rss_kb"],
            "dovecot_cpu_share": 100
            * (server_after["cpu"] - server_before["cpu"])
            / args.idle_seconds,
        }
        log(
            f"   maild idling: RSS {result['rss_kb'] / 1024:.0f} MB in {result['processes']} "
            f"processes (its own process {result['root_rss_kb'] / 1024:.0f} MB), CPU "
            f"{result['cpu_share']:.2f} % of a core over {args.idle_seconds:g} s, "
            f"{result['fds']:,} open files"
        )
        log(
            f"   Dovecot meanwhile: {result['dovecot_processes']} processes, RSS "
            f"{result['dovecot_rss_kb'] / 1024:.0f} MB, CPU {result['dovecot_cpu_share']:.2f} % "
            "of a core"
        )
        return result
    finally:
        daemon.stop(timeout=120)


def rows(
    kinds: list[str], maild: dict[str, list[dict[str, Any]]], bare: list[dict[str, Any]], args: Any
) -> list[dict[str, Any]]:
    """The suite's rows: sync time, RSS and idle CPU on each database, beside the bare client."""
    folders = args.accounts * len(FOLDERS)
    peer = f"bare asyncio client, {folders:,} IDLE connections"
    out = []
    for kind in kinds:
        runs = maild[kind]
        label = f"{args.accounts} accounts × {len(FOLDERS)} folders, {DB_LABEL[kind]}"
        out += [
            figure(
                "mailboxes",
                f"start → all folders synced and idling, {label}",
                "s",
                [r["seconds"] for r in runs],
                peer=peer + " (no fetching)",
                peer_values=[b["seconds"] for b in bare],
            ),
            figure(
                "mailboxes",
                f"RSS idling, maild + parser workers, {label}",
                "MB",
                [r["rss_kb"] / 1024 for r in runs],
                peer=peer,
                peer_values=[b["rss_kb"] / 1024 for b in bare],
                target=("max", RSS_TARGET_MB),
            ),
            figure(
                "mailboxes",
                f"CPU idling over {args.idle_seconds:g} s, {label}",
                "% of a core",
                [r["cpu_share"] for r in runs],
                peer=peer,
                peer_values=[100 * b["cpu"] / args.idle_seconds for b in bare],
                target=("max", CPU_TARGET),
            ),
        ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, help="accounts, 2 folders each (500; --quick 50)")
    parser.add_argument("--letters", type=int, default=2, help="letters per folder (2)")
    parser.add_argument("--idle-seconds", type=float, help="idle window (30; --quick 5)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before it (3)")
    parser.add_argument("--log-level", default="INFO", help="maild's log level (INFO)")
    add_common_options(parser)
    args = parser.parse_args()
    args.accounts = args.accounts or (50 if args.quick else 500)
    args.idle_seconds = args.idle_seconds or (5.0 if args.quick else 30.0)
    kinds = databases(args)
    launcher = Launcher()
    from maild.testing.dovecot import DovecotServer

    workdir = Path(tempfile.mkdtemp(prefix="maild-bench-boxes-"))
    users = {user(i): PASSWORD for i in range(args.accounts)}
    # two connections per account: keep Dovecot's process and client limits in proportion
    server = DovecotServer(workdir / "dovecot", users, max_connections_per_user=8)
    folders = args.accounts * len(FOLDERS)
    log(f"many mailboxes: {args.accounts} accounts × {len(FOLDERS)} folders = {folders:,}")
    try:
        server.start()
        log(
            f"-- seeding {args.letters} letters into each folder: {seed(server, args.accounts, args.letters):.1f} s"
        )
        bare: list[dict[str, Any]] = []
        maild: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        spec = {
            "host": server.host,
            "port": server.port,
            "accounts": args.accounts,
            "idle_seconds": args.idle_seconds,
        }
        for round_no in range(1, args.repeat + 1):
            log(f"-- round {round_no}: bare asyncio client")
            bare.append(run_phases(launcher, SCRIPT, "bare", [spec], workdir)[0])
            b = bare[-1]
            log(
                f"   {folders:,} connections idling after {b['seconds']:.1f} s; RSS "
                f"{b['rss_kb'] / 1024:.0f} MB, CPU {100 * b['cpu'] / args.idle_seconds:.2f} % "
                f"of a core over {args.idle_seconds:g} s"
            )
            for kind in kinds:
                log(f"-- round {round_no}: maild on {DB_LABEL[kind]}")
                with database(kind, workdir, args.postgres_url) as url:
                    maild[kind].append(measure_maild(server, url, workdir, args))
        finish(rows(kinds, maild, bare, args), args)
        return 0
    finally:
        server.close()
        launcher.close()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__" and not phase_entry({"bare": phase_bare}):
    sys.exit(main())
