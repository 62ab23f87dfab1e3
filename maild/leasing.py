"""Several `maild run` processes on one database: each polls only the folders it holds a lease on.

Every tick (a third of ``daemon.lease_seconds``) the keeper beats this process's heartbeat and
renews its leases in one transaction. A folder whose lease did not come back has its poller
cancelled at once; when the renewal itself fails, every poller is cancelled, since no lease can
be vouched for. Then the keeper counts the processes alive and evens out: it takes free leases
(in a random order) up to its share, ``ceil(folders / processes)``, or hands back what is over
that share, so N processes end up with about M/N folders each, whichever started first. A killed
process's leases run out after ``lease_seconds``, and the others take them at their next tick.
On stop the keeper stops its pollers, gives every lease back and announces it (NOTIFY on
PostgreSQL), so the others take over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import secrets
import socket
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.status import StatusBoard
from maild.db import leases
from maild.ingest.poller import FolderPoller
from maild.logging import get_logger

log = get_logger(__name__)


def new_owner_id() -> str:
    """Name this process uniquely among all that share the database: host, pid and a random part."""
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{secrets.token_hex(4)}"


class LeaseKeeper:
    """Run the pollers of the folders this process holds leases on, and keep its share of them."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pollers: Mapping[int, FolderPoller],
        *,
        owner: str,
        lease_seconds: float,
        status: StatusBoard,
        stop: asyncio.Event,
        grace: float,
    ) -> None:
        self.sessions = sessions
        self.pollers = dict(pollers)
        self.owner = owner
        self.ttl = timedelta(seconds=lease_seconds)
        self.tick = lease_seconds / 3
        self.status = status
        self.stop = stop
        self.grace = grace
        self._tasks: dict[int, asyncio.Task[bool]] = {}
        self._ending: dict[int, asyncio.Task[bool]] = {}  # cancelled, not finished yet
        self._handbacks: dict[asyncio.Task[None], list[int]] = {}
        self._leaving: set[int] = set()  # being handed back: still held, not to be restarted
        self._wake = asyncio.Event()
        # Renewals and hand-backs lock the same folder rows: one at a time, never in a cycle.
        self._writing = asyncio.Lock()
        status.owner = owner

    def wake(self) -> None:
        """Look at the leases now instead of at the next tick (another process gave some back)."""
        self._wake.set()

    async def run(self) -> bool:
        """Keep leases and pollers until stopped; then stop the pollers and give the leases back."""
        loop = asyncio.get_running_loop()
        try:
            await self._join()
            while not self.stop.is_set():
                self._wake.clear()
                started = loop.time()
                await self._tick()
                await _wait_any(self._wake, self.stop, max(self.tick - (loop.time() - started), 0))
        finally:
            try:
                await self._stop_pollers()
            finally:  # even when a second signal cuts the grace short
                await self._leave()
        return True

    # -- one tick --------------------------------------------------------------------------

    async def _tick(self) -> None:
        """Renew, drop what was lost, then take or hand back folders to keep this process's share."""
        self._reap()
        try:
            held = await self._renew()
        except Exception as exc:  # the database cannot vouch for any lease: stop storing
            error = f"lease renewal failed: {type(exc).__name__}: {exc}"
            log.warning("lease_renew_failed", error=error, folders=len(self._tasks))
            for folder_id in list(self._tasks):
                self._cancel(folder_id)
                self.status.error(*self._names(folder_id), error)
            return
        for folder_id in set(self._tasks) - held:
            account, folder = self._names(folder_id)
            log.warning("lease_lost", account=account, folder=folder)
            self._cancel(folder_id)
        try:
            await self._balance(held)
        except Exception as exc:  # taking more can wait for the next tick
            log.warning("lease_balance_failed", error=f"{type(exc).__name__}: {exc}")

    async def _renew(self) -> set[int]:
        """Beat the heartbeat and extend every lease this process holds, on the database's clock."""
        async with self._writing, self.sessions.begin() as session:
            now = await leases.clock(session)
            until = now + self.ttl
            await leases.heartbeat(
                session,
                self.owner,
                host=socket.gethostname(),
                pid=os.getpid(),
                now=now,
                until=until,
            )
            return await leases.renew(session, self.owner, list(self.pollers), until=until)

    async def _balance(self, held: set[int]) -> None:
        """Take free leases up to this process's share, or hand back those over it."""
        async with self.sessions.begin() as session:
            now = await leases.clock(session)
            await leases.forget_gone(session, now)
            processes = max(await leases.alive(session, now), 1)
            share = math.ceil(len(self.pollers) / processes)
            taken = await leases.take(
                session,
                self.owner,
                [folder_id for folder_id in self.pollers if folder_id not in held],
                now=now,
                until=now + self.ttl,
                limit=share - len(held - self._leaving),
            )
            holders = await leases.holders(session, list(self.pollers))
        self.status.processes = processes
        self._show(holders)
        mine = {i for i, holder in holders.items() if holder.owner == self.owner} - self._leaving
        if taken:
            log.info("leases_taken", folders=len(taken), held=len(mine), share=share)
        for folder_id in sorted(mine - set(self._tasks) - set(self._ending)):
            self._start(folder_id)  # a folder whose old poller is still ending starts next tick
        if len(mine) > share:
            self._hand_back(random.sample(sorted(mine), len(mine) - share), share)

    def _show(self, holders: Mapping[int, leases.Holder]) -> None:
        """Publish who holds each folder on the status board, for /healthz."""
        for folder_id, holder in holders.items():
            if holder.owner == self.owner:
                state = "here"
            elif holder.owner is None:
                state = "free"
            else:
                state = "elsewhere"
            self.status.leased(*self._names(folder_id), state, holder.owner, holder.until)

    # -- pollers ---------------------------------------------------------------------------

    def _names(self, folder_id: int) -> tuple[str, str]:
        """Give a folder's (account, folder) names."""
        poller = self.pollers[folder_id]
        return poller.account, poller.folder

    def _start(self, folder_id: int) -> None:
        """Start polling a folder this process now holds."""
        poller = self.pollers[folder_id]
        poller.stop.clear()
        self._tasks[folder_id] = asyncio.create_task(
            poller.run(), name=f"poll:{poller.account}:{poller.folder}"
        )

    def _cancel(self, folder_id: int) -> None:
        """Stop a folder's poller at once: whatever it has not committed is rolled back."""
        task = self._tasks.pop(folder_id)
        self.pollers[folder_id].stop.set()
        task.cancel()
        self._ending[folder_id] = task

    def _reap(self) -> None:
        """Collect pollers that have ended (cancelled, or stopped on a lost lease)."""
        for folder_id, task in list(self._tasks.items()):
            if task.done():
                self._ending[folder_id] = self._tasks.pop(folder_id)
        for folder_id, task in list(self._ending.items()):
            if not task.done():
                continue
            del self._ending[folder_id]
            if not task.cancelled() and task.exception() is not None:
                log.error("poller_crashed", task=task.get_name(), error=repr(task.exception()))
        for handback in [task for task in self._handbacks if task.done()]:
            self._leaving.difference_update(self._handbacks.pop(handback))
            if not handback.cancelled() and handback.exception() is not None:
                log.warning("lease_hand_back_failed", error=repr(handback.exception()))

    def _hand_back(self, folder_ids: list[int], share: int) -> None:
        """Hand folders over the share back in the background, so renewals go on meanwhile."""
        tasks = []
        for folder_id in folder_ids:
            self.pollers[folder_id].stop.set()
            task = self._tasks.pop(folder_id, None)
            if task is not None:
                tasks.append(task)
        self._leaving.update(folder_ids)
        handback = asyncio.create_task(
            self._release(folder_ids, tasks, share), name="lease-hand-back"
        )
        self._handbacks[handback] = folder_ids

    async def _release(
        self, folder_ids: list[int], tasks: list[asyncio.Task[bool]], share: int
    ) -> None:
        """Let the pollers finish in-flight letters briefly, then give their leases back."""
        await _finish(tasks, min(self.grace, self.tick))
        async with self._writing, self.sessions.begin() as session:
            await leases.release(session, self.owner, folder_ids)
            await leases.announce(session)
        for folder_id in folder_ids:
            self.status.leased(*self._names(folder_id), "free")
        log.info("leases_handed_back", folders=len(folder_ids), share=share)

    async def _stop_pollers(self) -> None:
        """Stop every poller, giving in-flight letters the grace period, then cancel the rest."""
        for poller in self.pollers.values():
            poller.stop.set()
        tasks = [*self._tasks.values(), *self._ending.values()]
        self._tasks.clear()
        self._ending.clear()
        await asyncio.gather(*self._handbacks, return_exceptions=True)
        self._handbacks.clear()
        if tasks:
            log.info("stopping", in_flight=len(tasks))
        await _finish(tasks, self.grace)

    # -- joining and leaving ---------------------------------------------------------------

    async def _join(self) -> None:
        """Say this process is here (so the others hand back their surplus), forget dead ones."""
        try:
            async with self.sessions.begin() as session:
                now = await leases.clock(session)
                await leases.forget_gone(session, now)
                await leases.heartbeat(
                    session,
                    self.owner,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    now=now,
                    until=now + self.ttl,
                )
                await leases.announce(session)
        except Exception as exc:  # the first tick tries again
            log.warning("lease_join_failed", error=f"{type(exc).__name__}: {exc}")
        log.info("lease_keeper_started", owner=self.owner, lease_seconds=self.ttl.total_seconds())

    async def _leave(self) -> None:
        """Give every lease back and say so, so another process takes the folders over at once."""
        try:
            async with self.sessions.begin() as session:
                freed = await leases.release(session, self.owner)
                await leases.leave(session, self.owner)
                await leases.announce(session)
        except Exception as exc:  # the leases run out by themselves after lease_seconds
            log.warning("lease_release_failed", error=f"{type(exc).__name__}: {exc}")
            return
        log.info("leases_released", owner=self.owner, folders=len(freed))


async def _finish(tasks: list[asyncio.Task[bool]], grace: float) -> None:
    """Wait up to ``grace`` seconds for tasks to end, then cancel the late ones and wait for them."""
    if not tasks:
        return
    try:
        _, late = await asyncio.wait(tasks, timeout=grace)
    except asyncio.CancelledError:  # told to exit now: nothing gets more time
        for task in tasks:
            task.cancel()
        raise
    for task in late:
        task.cancel()
    if late:
        log.warning("cancelled_after_grace", tasks=len(late))
    await asyncio.gather(*tasks, return_exceptions=True)


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, waking early on either event."""
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)
