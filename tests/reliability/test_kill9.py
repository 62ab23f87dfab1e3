"""kill -9 at random moments, on SQLite and PostgreSQL: nothing lost, nothing doubled.

The CI size is smaller than the hand run (``python -m tests.reliability.kill9``, 2,000 letters
and 20 kills, docs/reliability.md); the code and the checks are the same. The seed is random
and printed in the summary; ``MAILD_KILL9_SEED`` repeats a run's kill points.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maild.testing.dovecot import DovecotServer
from maild.testing.smtp import SmtpSink
from tests.reliability.kill9 import ROOT, Plan, group_members, run_kill9

#: 200 letters from 40 senders (50 forwards, 40 auto-replies), 5 kills: kills land in the
#: start-up, the ingest and the dispatch, in about 20 s per database on 2 cores.
CI_PLAN = Plan(letters=200, kills=5, senders=40)


@pytest.mark.slow
async def test_kill9_nothing_lost_nothing_doubled(
    private_dovecot: DovecotServer, smtp_sink: SmtpSink, db_url: str, tmp_path: Path
) -> None:
    """Every letter stored once, every forward and auto-reply sent (a resend at most), every
    outbox row done, the cursor at the last letter, no worker left behind by a killed daemon."""
    seed = int(os.environ.get("MAILD_KILL9_SEED") or random.randrange(1_000_000))
    plan = Plan(CI_PLAN.letters, CI_PLAN.kills, CI_PLAN.senders, seed)
    report = await run_kill9(private_dovecot, smtp_sink, db_url, tmp_path, plan)
    summary = report.summary()
    print(summary)  # the figures, with -s or -rA
    assert report.problems == [], summary
    assert len(report.kills) == plan.kills, summary
    assert report.letters_stored == plan.letters, summary
    assert report.forwards.sent == report.forwards.expected + report.forwards.duplicates, summary
    assert report.replies.sent == report.replies.expected + report.replies.duplicates, summary
    assert f"duplicates {report.forwards.duplicates}," in summary


PROBE = """
import asyncio
from maild.ingest.workers import ParserPool

async def main():
    pool = ParserPool(2)
    await asyncio.gather(*(pool.parse(b"Subject: x\\r\\n\\r\\nhi\\r\\n") for _ in range(8)))
    print("ready", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_parser_workers_exit_when_maild_is_killed(tmp_path: Path) -> None:
    """kill -9 of the daemon's process leaves none of its parser workers running."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    errors = tmp_path / "probe.err"
    with errors.open("wb") as err:  # multiprocessing's tracker reports the killed pool here
        probe = subprocess.Popen(
            [sys.executable, "-c", PROBE],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    try:
        assert probe.stdout is not None
        assert probe.stdout.readline() == b"ready\n", errors.read_text(errors="replace")
        assert len(group_members(probe.pid)) > 1  # the probe and at least one worker
        probe.send_signal(signal.SIGKILL)
        probe.wait()
        deadline = time.monotonic() + 30
        while group_members(probe.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group_members(probe.pid) == []
    finally:
        if group_members(probe.pid):
            os.killpg(probe.pid, signal.SIGKILL)
        probe.wait()
        if probe.stdout is not None:
            probe.stdout.close()
