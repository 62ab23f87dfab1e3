"""Peak memory of this process and of its parser workers, read from /proc (Linux)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024


def _status_kb(pid: int | str, key: str) -> int | None:
    """Give one kB figure of /proc/PID/status (VmHWM, VmRSS), or None when it cannot be read."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def peak_bytes(pid: int | str = "self") -> int | None:
    """Give a process's peak resident set size (VmHWM) in bytes."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb * 1024


def reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS, so a measurement covers one test only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def parser_workers() -> list[int]:
    """List this process's children started by multiprocessing's spawn: the parser workers."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = stat.rsplit(")", 1)[1].split()[1]
        if parent == me and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


@dataclass
class MemoryWatch:
    """Sample the peak RSS of this process and of every parser worker while something runs."""

    interval: float = 0.1
    workers: dict[int, int] = field(default_factory=dict)
    own_before: int = 0
    own_peak: int = 0

    def sample(self) -> None:
        """Record the current peaks (a worker's VmHWM only grows while it lives)."""
        for pid in parser_workers():
            peak = peak_bytes(pid)
            if peak is not None:
                self.workers[pid] = max(self.workers.get(pid, 0), peak)
        self.own_peak = max(self.own_peak, peak_bytes() or 0)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MemoryWatch]:
        """Sample in the background for the duration of the block."""
        reset_peak()
        self.own_before = peak_bytes() or 0

        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(self.interval)

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.sample()

    def summary(self) -> str:
        """Say what was measured, in MB."""
        worst = max(self.workers.values(), default=0)
        return (
            f"daemon process: {self.own_before / MB:.0f} MB before, peak {self.own_peak / MB:.0f} MB; "
            f"parser workers: {len(self.workers)} seen, largest peak {worst / MB:.0f} MB"
        )
