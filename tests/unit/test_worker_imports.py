"""A parser worker started by the ``maild`` command carries the parser, not the whole daemon."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: What the daemon imports and a parser never needs (about 25 MB a worker).
DAEMON_ONLY = {"asyncio", "click", "pydantic", "sqlalchemy", "structlog", "aioimaplib"}

# What a spawned worker does before its first letter: run the parent's main script as
# __mp_main__, then import the module the pool names (the initializer and the parse call).
WORKER_START = """
import runpy, sys
runpy.run_path(sys.argv[1], run_name="__mp_main__")
import maild.ingest.parser_process
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _top_level_modules_of_a_worker(main_script: Path) -> set[str]:
    """Start an interpreter the way spawn starts a parser worker; give its top-level modules."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER_START, str(main_script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(done.stdout.split())


def test_the_maild_command_s_workers_import_no_daemon_module() -> None:
    """The installed ``maild`` script is what every worker re-runs: it must stay light."""
    script = Path(sys.executable).with_name("maild")
    assert script.is_file(), f"{script} is missing: install maild (pip install -e .)"
    assert not _top_level_modules_of_a_worker(script) & DAEMON_ONLY
