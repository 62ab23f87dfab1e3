"""Every maild benchmark in one go, as one Markdown table of medians beside their references.

Run by hand (it is not a test)::

    .venv/bin/python bench/run_all.py                    # everything, 3 rounds each
    .venv/bin/python bench/run_all.py --quick --repeat 1 # a smoke run, small sizes
    .venv/bin/python bench/run_all.py --medium           # reduced sizes, for a busy machine
    .venv/bin/python bench/run_all.py --only push,outbox --out results.md

Each benchmark runs as its own script (``bench/NAME.py``, which also runs alone) in its own
process, with ``--repeat`` rounds; it hands its figures back as JSON. The table shows, for
every figure, maild's median (and the spread over the rounds), the reference measured in the
same run, the target and whether the medians meet it. The 1-minute load average before each
benchmark is printed with it: on a shared machine, figures taken under load are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import DEFAULT_PG, PG_ENV, figure, log, machine, markdown, phase_env

HERE = Path(__file__).resolve().parent
# benchmark name -> the scripts it runs (each takes --repeat, --quick, --figures)
BENCHMARKS = {
    "ingest": ["ingest.py"],
    "push": ["push.py"],
    "mailboxes": ["mailboxes.py"],
    "outbox": ["outbox.py"],
    "rules": ["rules.py", "moves.py"],
    "memory": ["memory.py"],
}
NO_DATABASE = {"rules.py"}  # scripts that take no database options
# --medium: sizes between --quick and the full run, for a busy machine (1,000 folders stay)
MEDIUM = {
    "ingest.py": ["--letters", "3000", "--getmail-letters", "300"],
    "push.py": ["--letters", "50", "--backlog", "2000"],
    "outbox.py": ["--letters", "300"],
    "rules.py": ["--letters", "3000"],
    "moves.py": ["--letters", "3000"],
}


def command(script: str, args: argparse.Namespace, figures: Path) -> list[str]:
    """Build one script's command line from the suite's options."""
    argv = [sys.executable, str(HERE / script), "--repeat", str(args.repeat)]
    argv += ["--figures", str(figures)]
    if args.quick:
        argv.append("--quick")
    elif args.medium:
        argv += MEDIUM.get(script, [])
    if script not in NO_DATABASE:
        argv += ["--postgres-url", args.postgres_url]
        if args.skip_postgres:
            argv.append("--skip-postgres")
    return argv


def run_script(script: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """Run one benchmark script, its output shown as it comes; give its figures."""
    figures = workdir / f"{script}.json"
    began = time.monotonic()
    done = subprocess.run(command(script, args, figures), env=phase_env(), check=False)
    minutes = (time.monotonic() - began) / 60
    if done.returncode != 0 or not figures.exists():
        log(f"!! {script} failed (exit {done.returncode}) after {minutes:.1f} min")
        return [
            figure(script.removesuffix(".py"), f"failed with exit code {done.returncode}", "", [])
        ]
    log(f"== {script} done in {minutes:.1f} min")
    return list(json.loads(figures.read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds per benchmark (3)")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    sizes.add_argument("--medium", action="store_true", help="reduced sizes, for a busy machine")
    parser.add_argument(
        "--only", help=f"comma-separated benchmarks to run, of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--out", metavar="FILE", help="also write the report (Markdown) here")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(PG_ENV, DEFAULT_PG),
        help=f"a server where the user may create databases (env {PG_ENV})",
    )
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or args.repeat < 1:
        parser.error(f"unknown benchmark {unknown}; known: {', '.join(BENCHMARKS)}")
    started = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="maild-bench-all-") as tmp:
        for name in names:
            for script in BENCHMARKS[name]:
                load = os.getloadavg()[0]
                loads.append(f"{script} {load:.1f}")
                log(f"\n== {script} (load average {load:.2f})")
                rows += run_script(script, args, Path(tmp))
    minutes = (datetime.now(UTC) - started).total_seconds() / 60
    report = "\n".join(
        [
            f"{started:%Y-%m-%d}, {machine()}; `bench/run_all.py"
            + (" --quick" if args.quick else " --medium" if args.medium else "")
            + f" --repeat {args.repeat}`"
            + (f" `--only {args.only}`" if args.only else "")
            + f", {minutes:.0f} minutes. Medians of {args.repeat} round(s)"
            + (" (min–max)" if args.repeat > 1 else "")
            + ".",
            "",
            "1-minute load average before each script: " + ", ".join(loads) + ".",
            "",
            markdown(rows),
        ]
    )
    log("\n" + report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
