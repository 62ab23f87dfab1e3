"""From fetched letter to database row: one transaction per letter, the cursor moving with it."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.letter import FetchedMessage, ParsedLetter
from maild.db import repo
from maild.errors import ParseError
from maild.ingest.poller import Cursor
from maild.ingest.workers import ParserPool
from maild.logging import get_logger
from maild.settings import Config

log = get_logger(__name__)


@dataclass
class FolderStore:
    """The database side of one watched folder: implements the poller's LetterSink."""

    sessions: async_sessionmaker[AsyncSession]
    account: str
    folder: str
    folder_id: int
    first_sync_mode: str = "record"

    async def cursor(self) -> Cursor:
        """Read the folder's cursor."""
        async with self.sessions() as session:
            row = await repo.load_folder(session, self.folder_id)
        return Cursor(uidvalidity=row.uidvalidity, last_uid=row.last_uid)

    async def set_uidvalidity(self, uidvalidity: int, *, changed: bool) -> None:
        """Adopt a new UIDVALIDITY; stored letters are re-matched by content as they come back."""
        async with self.sessions.begin() as session:
            await repo.set_uidvalidity(session, self.folder_id, uidvalidity, changed=changed)

    async def synced(self) -> None:
        """Record a complete pass."""
        async with self.sessions.begin() as session:
            await repo.mark_synced(session, self.folder_id)

    async def store(
        self, message: FetchedMessage, parsed: ParsedLetter | None, error: str | None
    ) -> str:
        """Store one letter; if that fails, keep it raw and flagged; never advance past a lost one."""
        sha256 = repo.sha256_of(message.raw)
        status = "oversize" if message.headers_only else ("failed" if error else "stored")
        try:
            outcome, letter_id = await self._store(message, parsed, status, error, sha256)
        except Exception as exc:  # keep the letter raw, whatever the database refused
            log.warning("store_failed", uid=message.uid, error=f"{type(exc).__name__}: {exc}")
            reason = f"storing the parsed letter failed: {type(exc).__name__}: {exc}"
            outcome, letter_id = await self._store(message, None, "failed", reason[:4000], sha256)
        self._log(message, parsed, outcome, letter_id, error)
        return outcome

    async def _store(
        self,
        message: FetchedMessage,
        parsed: ParsedLetter | None,
        status: str,
        error: str | None,
        sha256: str,
    ) -> tuple[str, int | None]:
        """Run the letter's single transaction: re-match or insert, then move the cursor."""
        async with self.sessions.begin() as session:
            folder = await repo.load_folder(session, self.folder_id)
            letter_id = None
            outcome = status
            if folder.uidvalidity_changes:
                letter_id = await repo.rekey_letter(
                    session,
                    folder,
                    sha256=sha256,
                    uidvalidity=folder.uidvalidity or 0,
                    uid=message.uid,
                )
                outcome = "rekeyed" if letter_id is not None else status
            if letter_id is None:
                first_sync = self.first_sync_mode == "record" and not folder.first_sync_done
                letter_id = await repo.insert_letter(
                    session,
                    folder,
                    message,
                    parsed,
                    status=status,
                    error=error,
                    first_sync=first_sync,
                    sha256=sha256,
                )
                if letter_id is None:
                    outcome = "duplicate"
            await repo.advance_cursor(session, self.folder_id, message.uid)
        return outcome, letter_id

    def _log(
        self,
        message: FetchedMessage,
        parsed: ParsedLetter | None,
        outcome: str,
        letter_id: int | None,
        error: str | None,
    ) -> None:
        """Write the one summary line per letter."""
        fields = {
            "account": self.account,
            "folder": self.folder,
            "uid": message.uid,
            "letter_id": letter_id,
            "outcome": outcome,
            "size": message.size,
            "message_id": parsed.message_id if parsed else None,
        }
        if outcome in ("failed", "oversize"):
            log.warning("letter", **fields, error=error)
        else:
            log.info("letter", **fields)


async def prepare_folders(
    sessions: async_sessionmaker[AsyncSession], config: Config
) -> dict[tuple[str, str], int]:
    """Mirror accounts and watched folders into the database; give folder ids by (account, folder)."""
    ids: dict[tuple[str, str], int] = {}
    async with sessions.begin() as session:
        for account in config.accounts:
            account_id = await repo.upsert_account(
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
