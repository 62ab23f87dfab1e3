"""Parts every benchmark shares: measuring processes, the phase launcher, maild in its own
process, throwaway databases, and the figures each benchmark hands to ``run_all.py``.

Only the standard library at import time: maild's parser pool uses "spawn", which re-imports
the main module (a benchmark script) in every worker, and the workers must stay as lean as in
production. maild, SQLAlchemy and the rest are imported inside the functions that need them.

Run as a script, ``common.py daemon CONFIG.json`` is maild itself (``maild run``'s code
path, signals included) on a config given as JSON, so benchmarks can start and stop it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_ENV = "MAILD_BENCH_POSTGRES_URL"
MB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def rate(count: float, seconds: float) -> float:
    """Divide, giving 0 for a phase that took no time."""
    return count / seconds if seconds > 0 else 0.0


def kb(value: int | None) -> str:
    """Format a KB figure with thousands separators."""
    return "-" if value is None else f"{value:,}"


def log(message: str = "") -> None:
    """Print a progress line at once."""
    print(message, flush=True)


def percentile(values: list[float], share: float) -> float:
    """Give the nearest-rank percentile (share 0.5 is the median, 0.99 the p99)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> float:
    """Poll until ``check()`` holds; give the seconds it took, or raise after ``timeout``."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - began


def free_port() -> int:
    """Ask the kernel for a free loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------------
# Measuring processes
# --------------------------------------------------------------------------------------------


def vm_hwm(pid: int | str = "self") -> int | None:
    """Give a process's own peak RSS in KB (VmHWM), which, unlike ru_maxrss, exec resets."""
    return proc_status(pid).get("VmHWM")


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """Read the KB figures of /proc/PID/status (VmRSS, VmHWM, ...); empty once it has gone."""
    figures: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key.startswith("Vm") and value.strip().endswith("kB"):
                    figures[key] = int(value.split()[0])
    except OSError:
        pass
    return figures


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


def _stat_fields(path: str) -> list[bytes] | None:
    """Read the fields after the command name of a /proc stat file."""
    try:
        with open(path, "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _task_cpu(path: str) -> float | None:
    """Read utime + stime of a process or thread from its stat file, in seconds."""
    fields = _stat_fields(path)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / TICK


def process_tree(root: int) -> list[int]:
    """List a process and all its descendants (found by parent pid in /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(f"/proc/{entry.name}/stat")
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def tree_figures(root: int) -> dict[str, Any]:
    """Sum RSS, own peaks (VmHWM), CPU seconds and open files over a process and its children."""
    rss = hwm = fds = 0
    cpu = 0.0
    largest_child_hwm = 0
    pids = process_tree(root)
    for pid in pids:
        status = proc_status(pid)
        rss += status.get("VmRSS", 0)
        hwm += status.get("VmHWM", 0)
        if pid != root:
            largest_child_hwm = max(largest_child_hwm, status.get("VmHWM", 0))
        cpu += _task_cpu(f"/proc/{pid}/stat") or 0.0
        with contextlib.suppress(OSError):
            fds += len(os.listdir(f"/proc/{pid}/fd"))
    root_status = proc_status(root)
    return {
        "processes": len(pids),
        "rss_kb": rss,
        "hwm_sum_kb": hwm,
        "root_rss_kb": root_status.get("VmRSS", 0),
        "root_hwm_kb": root_status.get("VmHWM", 0),
        "largest_child_hwm_kb": largest_child_hwm,
        "cpu": cpu,
        "fds": fds,
    }


def processes_figures(pids: list[int]) -> dict[str, float]:
    """Sum RSS (KB) and CPU seconds over some processes."""
    rss, cpu = 0, 0.0
    for pid in pids:
        rss += proc_status(pid).get("VmRSS", 0)
        cpu += _task_cpu(f"/proc/{pid}/stat") or 0.0
    return {"rss_kb": rss, "cpu": cpu}


class PeakSampler(threading.Thread):
    """Sample a process tree's summed RSS while it runs, to find its simultaneous peak."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(name="bench-peak", daemon=True)
        self.root = root
        self.interval = interval
        self.peak_kb = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            rss = sum(proc_status(pid).get("VmRSS", 0) for pid in process_tree(self.root))
            self.peak_kb = max(self.peak_kb, rss)

    def stop(self) -> int:
        """Stop; give the largest summed RSS seen, in KB."""
        self._done.set()
        self.join()
        return self.peak_kb


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
        for pid in process_tree(me):
            if pid != me and (hwm := vm_hwm(pid)) is not None:
                self.child_peaks[str(pid)] = max(self.child_peaks.get(str(pid), 0), hwm)

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


# --------------------------------------------------------------------------------------------
# Phases: each measured piece in a fresh interpreter, started by a lean launcher
# --------------------------------------------------------------------------------------------

# A lean process that starts every phase: a child's ru_maxrss starts from its parent's peak,
# so phases must not be started by a main process that has generated letters. Each line in
# is a list of jobs run side by side; each line out is their exit codes.
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


def phase_env() -> dict[str, str]:
    """The environment of a measured subprocess: maild importable, no database override."""
    env = {k: v for k, v in os.environ.items() if k != "MAILD_DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_phases(
    launcher: Launcher, script: str, name: str, specs: list[dict[str, Any]], workdir: Path
) -> list[dict[str, Any]]:
    """Run ``script --phase name`` in fresh interpreters (side by side); give their JSON results."""
    jobs, results = [], []
    for spec in specs:
        tag = f"{name}-{spec.get('label', 'run')}-{uuid.uuid4().hex[:6]}"
        result_file, log_file = workdir / f"{tag}.json", workdir / f"{tag}.log"
        argv = [sys.executable, script, "--phase", name, json.dumps(spec), str(result_file)]
        jobs.append({"argv": argv, "env": phase_env(), "log": str(log_file)})
        results.append((result_file, log_file))
    codes = launcher.run(jobs)
    out = []
    for code, (result_file, log_file) in zip(codes, results, strict=True):
        if code != 0 or not result_file.exists():
            tail = log_file.read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(f"phase {name} failed ({code}):\n" + "\n".join(tail))
        out.append(dict(json.loads(result_file.read_text())))
    return out


def phase_entry(phases: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> bool:
    """Run ``--phase NAME SPEC RESULT`` if that is how this script was started; tell if it was."""
    if len(sys.argv) != 5 or sys.argv[1] != "--phase":
        return False
    name, spec, result_file = sys.argv[2:]
    Path(result_file).write_text(json.dumps(phases[name](json.loads(spec))))
    return True


# --------------------------------------------------------------------------------------------
# Databases and maild configs
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str, workdir: Path, postgres_url: str) -> Iterator[str]:
    """Give the URL of a fresh database: a new SQLite file, or a throwaway PostgreSQL one."""
    import asyncio

    if kind == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite+aiosqlite:///{path}"
        finally:
            for leftover in workdir.glob(f"{path.name}*"):
                leftover.unlink()
        return
    from sqlalchemy.engine import make_url

    from maild.testing.postgres import pg_admin

    name = f"maild_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(pg_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(pg_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def check_postgres(url: str) -> str | None:
    """Give why the PostgreSQL server at ``url`` cannot be used, or None when it can."""
    import asyncio

    from maild.testing.postgres import pg_admin

    try:
        asyncio.run(pg_admin(url, "SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def databases(args: argparse.Namespace) -> list[str]:
    """Name the databases a benchmark runs on: SQLite, and PostgreSQL unless skipped."""
    kinds = ["sqlite"]
    if not args.skip_postgres:
        problem = check_postgres(args.postgres_url)
        if problem is not None:
            raise SystemExit(f"PostgreSQL is not usable ({problem}); pass --skip-postgres")
        kinds.append("postgresql")
    return kinds


DB_LABEL = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def account_entry(server: Any, user: str, folders: list[str], workdir: Path) -> dict[str, Any]:
    """One ``[[accounts]]`` table for a Dovecot user, its password in a file as admins keep it."""
    secret = workdir / f"{user}.password"
    secret.write_text(server.users[user] + "\n", encoding="utf-8")
    return {
        "name": user,
        "address": f"{user}@corp.example",
        "imap": {
            "host": server.host,
            "port": server.port,
            "security": "none",
            "username": user,
            "password_file": str(secret),
        },
        "folders": {"watch": folders},
    }


def maild_config(
    db_url: str, accounts: list[dict[str, Any]], **sections: dict[str, Any]
) -> dict[str, Any]:
    """A whole config as JSON-able data: the database, the accounts, then any other section."""
    config: dict[str, Any] = {"database": {"url": db_url}, "accounts": accounts}
    daemon = {"health_listen": "", **sections.pop("daemon", {})}
    config["daemon"] = daemon
    config.update(sections)
    return config


class DaemonProcess:
    """``maild run`` in its own process on a JSON config, with its log in the work directory."""

    def __init__(self, config: dict[str, Any], workdir: Path, log_level: str = "INFO") -> None:
        tag = uuid.uuid4().hex[:6]
        self.config_file = workdir / f"maild-{tag}.json"
        self.config_file.write_text(json.dumps(config))
        self.log_file = workdir / f"maild-{tag}.log"
        with open(self.log_file, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "daemon", str(self.config_file), log_level],
                env=phase_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """Give maild's process id."""
        return self.process.pid

    def check(self) -> None:
        """Raise with the end of maild's log if it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"maild exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """Give the end of maild's log."""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM maild and wait (its graceful stop); kill it after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def healthz(port: int) -> dict[str, Any] | None:
    """Read maild's /healthz (200 or 503); None while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read()))
    except (OSError, ValueError):
        return None


def synced_folders(port: int) -> int:
    """Count the folders /healthz says have been read to their end at least once."""
    report = healthz(port) or {}
    return sum(
        1
        for account in report.get("accounts", {}).values()
        for state in account.get("folders", {}).values()
        if state.get("last_sync")
    )


def _run_daemon(config_file: str, log_level: str) -> int:
    """Run maild on a JSON config until SIGTERM, the way ``maild run`` does."""
    import asyncio

    from maild import logging as maild_logging
    from maild.runtime import run_daemon
    from maild.settings import Config

    maild_logging.configure(log_level, json=True)  # what `maild run` does off a TTY
    config = Config.model_validate(json.loads(Path(config_file).read_text()))
    result = asyncio.run(run_daemon(config))
    return 0 if result.ok else 1


# --------------------------------------------------------------------------------------------
# Figures: what each benchmark hands to run_all.py
# --------------------------------------------------------------------------------------------

# A target compares maild's median with a fixed value or with the reference's median:
#   min / max:   maild >= value / maild <= value
#   ratio_min:   maild / reference >= value
#   diff_max:    maild - reference <= value


def figure(
    bench: str,
    what: str,
    unit: str,
    maild: list[float],
    *,
    peer: str = "",
    peer_values: list[float] | None = None,
    peer_note: str = "",
    target: tuple[str, float] | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One row of the results: maild's value per round beside its reference's."""
    return {
        "bench": bench,
        "what": what,
        "unit": unit,
        "maild": maild,
        "peer": peer,
        "peer_values": peer_values,
        "peer_note": peer_note,
        "target": list(target) if target else None,
        "note": note,
    }


def verdict(row: dict[str, Any]) -> tuple[str, bool | None]:
    """Give a row's target as text and whether the medians meet it (None: nothing to judge)."""
    if not row["target"]:
        return "–", None
    kind, value = row["target"]
    mine = statistics.median(row["maild"]) if row["maild"] else None
    theirs = statistics.median(row["peer_values"]) if row.get("peer_values") else None
    unit = row["unit"]
    if kind == "min":
        return f"≥ {value:g} {unit}", None if mine is None else mine >= value
    if kind == "max":
        return f"≤ {value:g} {unit}", None if mine is None else mine <= value
    if kind == "ratio_min":
        text = f"≥ {value:g} × reference"
        if mine is None or not theirs:
            return text, None
        return f"{text} (now {mine / theirs:.2f} ×)", mine / theirs >= value
    if kind == "diff_max":
        text = f"maild adds ≤ {value:g} {unit}"
        if mine is None or theirs is None:
            return text, None
        return f"{text} (now {mine - theirs:+.1f})", mine - theirs <= value
    raise ValueError(f"unknown target kind {kind!r}")


def _number(values: list[float] | None, unit: str) -> str:
    """Format the median of a row's values (with the spread when there are several rounds)."""
    if not values:
        return "–"
    middle = statistics.median(values)
    digits = 0 if abs(middle) >= 100 else 1 if abs(middle) >= 10 else 2
    text = f"{middle:,.{digits}f} {unit}".strip()
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}–{max(values):,.{digits}f})"
    return text


def markdown(rows: list[dict[str, Any]]) -> str:
    """Render rows as a Markdown table: medians (min–max over rounds), target, met or not."""
    lines = [
        "| benchmark | figure | maild | reference | reference figure | target | met |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for row in rows:
        target, met = verdict(row)
        peer_value = _number(row.get("peer_values"), row["unit"]) if row["peer"] else ""
        if row["peer"] and not row.get("peer_values"):
            peer_value = row.get("peer_note") or "–"
        what = row["what"] + (f" ({row['note']})" if row.get("note") else "")
        mark = "–" if met is None else "yes" if met else "**no**"
        lines.append(
            f"| {row['bench']} | {what} | {_number(row['maild'], row['unit'])} | "
            f"{row['peer'] or '–'} | {peer_value or '–'} | {target} | {mark} |"
        )
    return "\n".join(lines)


def add_common_options(parser: argparse.ArgumentParser, *, postgres: bool = True) -> None:
    """Options every benchmark takes: rounds, a smoke size, where to write its figures."""
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows medians")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--figures", metavar="FILE", help="also write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    if postgres:
        parser.add_argument(
            "--postgres-url",
            default=os.environ.get(PG_ENV, DEFAULT_PG),
            help=f"a server where the user may create databases (env {PG_ENV}, "
            f"default {DEFAULT_PG})",
        )
        parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")


def finish(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the figures as a table and write them for run_all.py when asked."""
    log()
    log(markdown(rows))
    if args.figures:
        Path(args.figures).write_text(json.dumps(rows, indent=1))


def machine() -> str:
    """Describe this machine in one line: cores, CPU model, memory, Python."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError):
        total = Path("/proc/meminfo").read_text().split()[1]
        memory = f", {int(total) / MB:.0f} GB"
    return f"{os.cpu_count()} cores ({model}){memory}, Python {sys.version.split()[0]}"


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "daemon":
    sys.exit(_run_daemon(sys.argv[2], sys.argv[3]))
