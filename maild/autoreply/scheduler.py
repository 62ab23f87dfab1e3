"""The only APScheduler importer: switches each account's auto-reply on at start and off after end.

One in-memory scheduler per process. It does not decide which letters are answered (the policy
does, by each letter's arrival time, so a backlog is judged as it would have been live); it keeps
the state /healthz shows, logs each switch, and re-reads the manual off switches every minute.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from maild.autoreply.policy import Period, period_state
from maild.core.status import AutoreplyStatus, StatusBoard
from maild.logging import get_logger

__all__ = ["AutoreplyScheduler"]

log = get_logger(__name__)

#: How long after ``end`` (inclusive) the auto-reply is switched off.
AFTER_END = timedelta(seconds=1)

SwitchReader = Callable[[], Awaitable[Mapping[str, datetime]]]


class AutoreplyScheduler:
    """Keeps each account's auto-reply state, switching it at its period's start and end."""

    def __init__(
        self,
        periods: Mapping[str, Period],
        status: StatusBoard,
        read_switches: SwitchReader,
        *,
        refresh_seconds: float = 60.0,
    ) -> None:
        self.periods = dict(periods)
        self.status = status
        self._read_switches = read_switches
        self._refresh_seconds = refresh_seconds
        self._switches: dict[str, datetime] = {}
        self._scheduler: AsyncIOScheduler | None = None

    async def start(self) -> None:
        """Set every account's state now, then schedule the switches still to come."""
        now = datetime.now(UTC)
        await self._load_switches()
        scheduler = AsyncIOScheduler(timezone=UTC, jobstores={"default": MemoryJobStore()})
        for name, period in sorted(self.periods.items()):
            self._set(name, now, event="autoreply_state")
            if period.enabled and period.start is not None and period.end is not None:
                for at in (period.start, period.end + AFTER_END):
                    if at > now:
                        scheduler.add_job(
                            self._switch,
                            DateTrigger(run_date=at),
                            args=[name, at],
                            misfire_grace_time=None,
                            id=f"autoreply:{name}:{at.isoformat()}",
                        )
        scheduler.add_job(
            self._refresh,
            IntervalTrigger(seconds=self._refresh_seconds),
            id="autoreply:refresh",
            coalesce=True,
        )
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        """Stop the scheduler; jobs not yet due are dropped (the next start plans them again)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def jobs(self) -> list[tuple[str, datetime]]:
        """List the switches still to come, by job id and time (for tests and the log)."""
        if self._scheduler is None:
            return []
        return [
            (job.id, job.next_run_time)
            for job in self._scheduler.get_jobs()
            if job.id != "autoreply:refresh"
        ]

    async def _switch(self, name: str, at: datetime) -> None:
        """Switch one account at its period's start or after its end."""
        self._set(name, max(datetime.now(UTC), at), event="autoreply_switched")

    async def _refresh(self) -> None:
        """Re-read the manual off switches, which another process may have set."""
        try:
            await self._load_switches()
        except Exception as exc:  # the database may be away for a moment: keep the last state
            log.warning("autoreply_refresh_failed", error=f"{type(exc).__name__}: {exc}")
            return
        now = datetime.now(UTC)
        for name in sorted(self.periods):
            self._set(name, now, event="autoreply_switched", only_changes=True)

    async def _load_switches(self) -> None:
        """Read which accounts were switched off by hand."""
        self._switches = dict(await self._read_switches())

    def _set(self, name: str, now: datetime, *, event: str, only_changes: bool = False) -> None:
        """Put one account's state at ``now`` on the status board, and log it."""
        period = self.periods[name]
        off_at = self._switches.get(name)
        state = period_state(period, now, off_at)
        old = self.status.autoreply.get(name)
        if only_changes and old is not None and old.state == state:
            return
        self.status.autoreply[name] = AutoreplyStatus(state, period.start, period.end, off_at)
        log.info(
            event,
            account=name,
            state=state,
            previous=old.state if old is not None else None,
            start=period.start.isoformat() if period.start else None,
            end=period.end.isoformat() if period.end else None,
            switched_off_at=off_at.isoformat() if off_at else None,
        )
