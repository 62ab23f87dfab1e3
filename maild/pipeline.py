"""From fetched letter to database row: one transaction per letter, the cursor moving with it."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.letter import FetchedMessage, ParsedLetter
from maild.db import leads as leads_db
from maild.db import outbox, repo, sending
from maild.db import users as users_db
from maild.db.engine import database_away
from maild.db.gate import WriteGate
from maild.decide import Decider, StoredLetter
from maild.errors import LeaseLost, ParseError
from maild.ingest.parse import HashedLetter
from maild.ingest.poller import Cursor
from maild.ingest.workers import ParserPool
from maild.logging import get_logger, held_until_done
from maild.settings import Config

log = get_logger(__name__)


class _GiveWay(Exception):
    """Raised in a backlog's transaction when a push waits for the write gate: roll back, go again."""


#: Seconds between two writes of a folder's ``last_synced_at`` once its first pass is recorded.
SYNCED_EVERY = 60.0


@dataclass
class FolderStore:
    """The database side of one watched folder: implements the poller's LetterSink."""

    sessions: async_sessionmaker[AsyncSession]
    account: str
    folder: str
    folder_id: int
    first_sync_mode: str = "record"
    decider: Decider | None = None
    on_queued: Callable[[], None] | None = None
    is_sent_folder: bool = False
    lease_owner: str | None = None  # set when several processes share folders by leases
    #: One lock shared by every folder's writes on SQLite, whose single writer lock is taken by
    #: sleeping and retrying: with it, a folder's new letter waits its turn behind at most the
    #: transaction in progress, instead of losing every race to another folder's backlog; and
    #: a backlog's transaction in progress gives way to a push (``_GiveWay``).
    write_gate: WriteGate | None = None

    _marked_at: float | None = field(default=None, init=False, repr=False)

    def _writing(self, *, push: bool = False) -> AbstractAsyncContextManager[Any]:
        """Take the write gate if there is one, as a push (counted as waiting) or not."""
        if self.write_gate is None:
            return contextlib.nullcontext()
        return self.write_gate.push_turn() if push else self.write_gate

    def _give_way_if_pushed(self, may: bool) -> None:
        """Interrupt a backlog's transaction when a push waits for the gate (see ``_transaction``)."""
        if may and self.write_gate is not None and self.write_gate.pushes_waiting:
            raise _GiveWay

    async def cursor(self) -> Cursor:
        """Read the folder's cursor."""
        async with self.sessions() as session:
            row = await repo.load_folder(session, self.folder_id)
        return Cursor(uidvalidity=row.uidvalidity, last_uid=row.last_uid)

    async def set_uidvalidity(self, uidvalidity: int, *, changed: bool) -> None:
        """Adopt a new UIDVALIDITY; stored letters are re-matched by content as they come back."""
        async with self._writing(), self.sessions.begin() as session:
            await repo.set_uidvalidity(
                session, self.folder_id, uidvalidity, changed=changed, owner=self.lease_owner
            )

    async def synced(self) -> None:
        """Record a complete pass: the first at once, then at most every SYNCED_EVERY seconds.

        A pass ends after every IDLE wake-up; writing each would put a write transaction
        between a folder's letter and its return to IDLE, where the next letter is heard.
        """
        now = time.monotonic()
        if self._marked_at is not None and now - self._marked_at < SYNCED_EVERY:
            return
        async with self._writing(), self.sessions.begin() as session:
            await repo.mark_synced(session, self.folder_id, owner=self.lease_owner)
        self._marked_at = now

    async def store(
        self, message: FetchedMessage, parsed: ParsedLetter | None, error: str | None
    ) -> str:
        """Store one letter; see store_many."""
        return (await self.store_many([(message, parsed, error)]))[0]

    async def store_many(
        self,
        items: Sequence[tuple[FetchedMessage, ParsedLetter | None, str | None]],
        *,
        push: bool = False,
    ) -> list[str]:
        """Store letters in UID order with the cursor; if the group fails, store each on its own.

        ``push``: a few letters heard in IDLE, which a backlog's transaction gives way to.
        """
        batch = [self._new_letter(message, parsed, error) for message, parsed, error in items]
        try:
            results = await self._transaction(batch, push=push)
        except LeaseLost:
            raise  # another process polls the folder now: store nothing more here
        except Exception as exc:  # one bad letter must not cost the others: isolate it
            if database_away(exc):
                raise  # nothing stored, cursor unmoved: the poller fetches them again later
            if len(batch) == 1:
                results = [await self._keep_raw(batch[0], exc, push=push)]
            else:
                log.warning(
                    "batch_failed",
                    account=self.account,
                    folder=self.folder,
                    letters=len(batch),
                    error=f"{type(exc).__name__}: {exc}",
                )
                results = [await self._store_alone(item, push=push) for item in batch]
        for item, (outcome, letter_id) in zip(batch, results, strict=True):
            self._log(item, outcome, letter_id)
        return [outcome for outcome, _ in results]

    def _new_letter(
        self, message: FetchedMessage, parsed: ParsedLetter | None, error: str | None
    ) -> repo.NewLetter:
        """Decide a letter's status before it is stored."""
        status = "oversize" if message.headers_only else ("failed" if error else "stored")
        if isinstance(parsed, HashedLetter) and parsed.raw_sha256:
            sha256 = parsed.raw_sha256  # hashed by the parser process, from these very bytes
        else:
            sha256 = repo.sha256_of(message.raw)
        return repo.NewLetter(message, parsed, status, error, sha256)

    async def _store_alone(self, item: repo.NewLetter, *, push: bool) -> tuple[str, int | None]:
        """Store one letter in its own transaction, keeping it raw if even that fails."""
        try:
            return (await self._transaction([item], push=push))[0]
        except LeaseLost:
            raise
        except Exception as exc:
            if database_away(exc):
                raise
            return await self._keep_raw(item, exc, push=push)

    async def _keep_raw(
        self, item: repo.NewLetter, exc: Exception, *, push: bool
    ) -> tuple[str, int | None]:
        """Store the raw letter flagged failed with the reason; if this fails too, raise (no advance)."""
        reason = f"storing the parsed letter failed: {type(exc).__name__}: {exc}"[:4000]
        log.warning(
            "store_failed",
            account=self.account,
            folder=self.folder,
            uid=item.message.uid,
            error=reason,
        )
        raw_only = repo.NewLetter(item.message, None, "failed", reason, item.sha256)
        return (await self._transaction([raw_only], push=push))[0]

    async def _transaction(
        self, batch: list[repo.NewLetter], *, push: bool = False
    ) -> list[tuple[str, int | None]]:
        """Run one transaction, giving way once to a push that waits for the gate meanwhile.

        On SQLite a push's letter would wait for a backlog's whole group (32 letters, each
        decided). Instead the group's transaction looks between its steps whether a push waits,
        and if so rolls back and asks for the gate again, behind the push; the second time it
        runs to its end, so a stream of pushes cannot hold a backlog back for good.
        """
        try:
            return await self._transaction_once(batch, push=push, may_give_way=not push)
        except _GiveWay:
            return await self._transaction_once(batch, push=push, may_give_way=False)

    async def _transaction_once(
        self, batch: list[repo.NewLetter], *, push: bool, may_give_way: bool
    ) -> list[tuple[str, int | None]]:
        """Move the cursor past the letters, then re-match or insert each one, in one transaction."""
        give_way = functools.partial(self._give_way_if_pushed, may_give_way)
        # What the decider logs stands only once committed: a rolled back group (given way,
        # or failed and stored letter by letter) is decided and logged again.
        with held_until_done():
            return await self._transaction_body(batch, push=push, give_way=give_way)

    async def _transaction_body(
        self, batch: list[repo.NewLetter], *, push: bool, give_way: Callable[[], None]
    ) -> list[tuple[str, int | None]]:
        """Run the transaction itself; see ``_transaction_once``."""
        results: dict[int, tuple[str, int | None]] = {}
        queued = 0
        async with self._writing(push=push), self.sessions.begin() as session:
            folder = await repo.advance_and_load_folder(
                session,
                self.folder_id,
                max(item.message.uid for item in batch),
                owner=self.lease_owner,
            )
            give_way()
            pending = batch
            if folder.uidvalidity_changes:
                pending = []
                for item in batch:
                    letter_id = await repo.rekey_letter(
                        session,
                        folder,
                        sha256=item.sha256,
                        uidvalidity=folder.uidvalidity or 0,
                        uid=item.message.uid,
                    )
                    if letter_id is None:
                        pending.append(item)
                    else:
                        results[item.message.uid] = ("rekeyed", letter_id)
            pending = await self._moved_here(session, folder, pending, results)
            pending = await self._sent_here(session, folder, pending, results)
            give_way()
            first_sync = self.first_sync_mode == "record" and not folder.first_sync_done
            ids = await repo.insert_letters(session, folder, pending, first_sync=first_sync)
            give_way()
            for item in pending:
                letter_id = ids.get(item.message.uid)
                results[item.message.uid] = (
                    (item.status, letter_id) if letter_id is not None else ("duplicate", None)
                )
            if self.decider is not None and not first_sync:
                queued += await self.decider.apply(
                    session,
                    folder.account_id,
                    _decidable(pending, ids),
                    folder_id=folder.id,
                    between=give_way,
                )
        if queued and self.on_queued is not None:
            self.on_queued()
        return [results[item.message.uid] for item in batch]

    async def _moved_here(
        self,
        session: AsyncSession,
        folder: repo.FolderRow,
        batch: list[repo.NewLetter],
        results: dict[int, tuple[str, int | None]],
    ) -> list[repo.NewLetter]:
        """Recognise letters maild itself moved into this folder: re-point them, do not store twice."""
        if self.decider is None or not batch:
            return batch
        moved = await outbox.moved_here(
            session,
            account_id=folder.account_id,
            folder=self.folder,
            sha256s=[item.sha256 for item in batch],
        )
        return await _known_here(session, folder, batch, results, moved, outcome="moved")

    async def _sent_here(
        self,
        session: AsyncSession,
        folder: repo.FolderRow,
        batch: list[repo.NewLetter],
        results: dict[int, tuple[str, int | None]],
    ) -> list[repo.NewLetter]:
        """Recognise letters maild sent and appended here: give the stored one its UID, not a twin."""
        if not self.is_sent_folder or not batch:
            return batch
        sent = await sending.unfiled_sent(session, folder.id, [item.sha256 for item in batch])
        return await _known_here(session, folder, batch, results, sent, outcome="sent")

    def _log(self, item: repo.NewLetter, outcome: str, letter_id: int | None) -> None:
        """Write the one summary line per letter."""
        fields = {
            "account": self.account,
            "folder": self.folder,
            "uid": item.message.uid,
            "letter_id": letter_id,
            "outcome": outcome,
            "size": item.message.size,
            "message_id": item.parsed.message_id if item.parsed else None,
        }
        if outcome in ("failed", "oversize"):
            log.warning(
                "letter",
                **fields,
                error=item.error if outcome == "oversize" else (item.error or "")[:300],
            )
        else:
            log.info("letter", **fields)


async def _known_here(
    session: AsyncSession,
    folder: repo.FolderRow,
    batch: list[repo.NewLetter],
    results: dict[int, tuple[str, int | None]],
    known: dict[str, int],
    *,
    outcome: str,
) -> list[repo.NewLetter]:
    """Point stored letters found again here (by content) at their UID; give the truly new rest."""
    if not known:
        return batch
    rest = []
    for item in batch:
        letter_id = known.pop(item.sha256, None)
        if letter_id is None:
            rest.append(item)
            continue
        await outbox.relocate_letter(
            session,
            letter_id,
            folder_id=folder.id,
            uidvalidity=folder.uidvalidity or 0,
            uid=item.message.uid,
        )
        results[item.message.uid] = (outcome, letter_id)
    return rest


def _decidable(items: Sequence[repo.NewLetter], ids: dict[int, int]) -> list[StoredLetter]:
    """Pick the letters the rules run on: newly inserted and parsed (an oversize one by its header)."""
    return [
        StoredLetter(
            ids[item.message.uid], item.parsed, item.message.size, item.message.internaldate
        )
        for item in items
        if item.parsed is not None and item.status != "failed" and item.message.uid in ids
    ]


async def prepare_folders(
    sessions: async_sessionmaker[AsyncSession], config: Config
) -> dict[tuple[str, str], int]:
    """Mirror accounts and watched folders into the database; give folder ids by (account, folder)."""
    ids: dict[tuple[str, str], int] = {}
    account_ids: dict[str, int] = {}
    async with sessions.begin() as session:
        for account in config.accounts:
            account_ids[account.name] = account_id = await repo.upsert_account(
                session,
                name=account.name,
                address=account.address,
                display_name=account.display_name,
                enabled=account.enabled,
            )
            for folder in account.folders.watch:
                ids[(account.name, folder)] = await repo.ensure_folder(
                    session, account_id=account_id, name=folder
                )
            await leads_db.mark_lead_folders(
                session, account_id, account.folders.watch, account.lead_folders()
            )
        await leads_db.sync_scenarios(
            session,
            {s.name: (s.title, s.leads_from) for s in config.scenarios},
            ids,
        )
        await users_db.upsert_users(
            session,
            [
                users_db.DeclaredUser(u.login, u.full_name, u.email, u.font, u.sender_names)
                for u in config.users
            ],
            account_ids,
        )
    return ids


@dataclass
class RetryReport:
    """What `maild letters retry-failed` did."""

    fixed: list[int] = field(default_factory=list)
    still_failing: dict[int, str] = field(default_factory=dict)


async def retry_failed(
    sessions: async_sessionmaker[AsyncSession], parser: ParserPool, *, limit: int | None = None
) -> RetryReport:
    """Parse failed letters again from their raw bytes; each one in its own transaction."""
    report = RetryReport()
    async with sessions() as session:
        ids = await repo.failed_letter_ids(session, limit=limit)
    for letter_id in ids:
        async with sessions() as session:
            raw = await repo.letter_raw(session, letter_id)
        try:
            parsed = await parser.parse(raw)
            async with sessions.begin() as session:
                await repo.mark_parsed(session, letter_id, parsed)
            report.fixed.append(letter_id)
            log.info("letter_retried", letter_id=letter_id, outcome="stored")
        except (ParseError, Exception) as exc:
            reason = f"retry failed: {type(exc).__name__}: {exc}"[:4000]
            async with sessions.begin() as session:
                await repo.mark_failed_again(session, letter_id, reason)
            report.still_failing[letter_id] = reason
            log.warning("letter_retried", letter_id=letter_id, outcome="failed", error=reason)
    return report
