"""Per-account health as plain values, written by the pollers and read by /healthz."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FolderState:
    """What an admin needs to know about one watched folder right now."""

    connected: bool = False
    last_sync: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    stored: int = 0
    failed: int = 0
    duplicates: int = 0
    lease: str | None = None  # "here", "elsewhere" or "free"; None when folders are not shared
    lease_owner: str | None = None
    lease_until: datetime | None = None

    @property
    def mine(self) -> bool:
        """Tell whether this process answers for the folder (it holds its lease, or none is used)."""
        return self.lease in (None, "here")

    @property
    def ok(self) -> bool:
        """Tell whether the folder is fine as far as this process is concerned."""
        return not self.mine or (self.connected and self.last_error is None)

    def as_dict(self) -> dict[str, object]:
        """Render for the /healthz JSON."""
        lease = None
        if self.lease is not None:
            lease = {
                "state": self.lease,
                "owner": self.lease_owner,
                "until": self.lease_until.isoformat() if self.lease_until else None,
            }
        return {
            "connected": self.connected,
            "last_sync": self.last_sync.isoformat() if self.last_sync else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "stored": self.stored,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "lease": lease,
        }


@dataclass
class AutoreplyStatus:
    """One account's auto-reply as the scheduler last switched it."""

    state: str
    start: datetime | None = None
    end: datetime | None = None
    switched_off_at: datetime | None = None
    changed_at: datetime = field(default_factory=_now)

    def as_dict(self) -> dict[str, object]:
        """Render for the /healthz JSON."""
        return {
            "state": self.state,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "switched_off_at": self.switched_off_at.isoformat() if self.switched_off_at else None,
            "changed_at": self.changed_at.isoformat(),
        }


@dataclass
class StatusBoard:
    """The daemon's view of every (account, folder), shared by pollers and the health endpoint."""

    folders: dict[tuple[str, str], FolderState] = field(default_factory=dict)
    autoreply: dict[str, AutoreplyStatus] = field(default_factory=dict)
    owner: str | None = None  # this process's lease owner id, when folders are shared
    processes: int = 0  # processes sharing the folders, as last counted
    outbox: dict[str, int] | None = None  # outbox rows by status, as last counted

    def folder(self, account: str, folder: str) -> FolderState:
        """Give the state of one folder, creating it on first use."""
        return self.folders.setdefault((account, folder), FolderState())

    def connected(self, account: str, folder: str) -> None:
        """Record a successful login and select."""
        self.folder(account, folder).connected = True

    def synced(self, account: str, folder: str) -> None:
        """Record a finished sync; a sync that succeeds clears the last error."""
        state = self.folder(account, folder)
        state.connected = True
        state.last_sync = _now()
        state.last_error = None

    def error(self, account: str, folder: str, message: str) -> None:
        """Record why the folder is not being synced."""
        state = self.folder(account, folder)
        state.connected = False
        state.last_error = message
        state.last_error_at = _now()

    def leased(
        self,
        account: str,
        folder: str,
        state: str,
        owner: str | None = None,
        until: datetime | None = None,
    ) -> None:
        """Record who polls the folder: this process ("here"), another one, or nobody yet."""
        entry = self.folder(account, folder)
        entry.lease, entry.lease_owner, entry.lease_until = state, owner, until
        if state != "here":
            entry.connected = False

    def healthy(self) -> bool:
        """Tell whether every folder this process polls is connected with no outstanding error."""
        return all(s.ok for s in self.folders.values())

    def as_dict(self) -> dict[str, object]:
        """Render for the /healthz JSON, grouped by account."""
        accounts: dict[str, dict[str, object]] = {}
        for (account, folder), state in sorted(self.folders.items()):
            entry = accounts.setdefault(account, {"ok": True, "folders": {}})
            folders = entry["folders"]
            assert isinstance(folders, dict)
            folders[folder] = state.as_dict()
            if not state.ok:
                entry["ok"] = False
        report: dict[str, object] = {"ok": self.healthy(), "accounts": accounts}
        if self.owner is not None:
            report["leases"] = self._leases()
        if self.outbox is not None:
            report["outbox"] = {"pending": 0, "dead": 0, **self.outbox}
        if self.autoreply:
            report["autoreply"] = {
                name: status.as_dict() for name, status in sorted(self.autoreply.items())
            }
        return report

    def _leases(self) -> dict[str, object]:
        """Summarise the split of folders between processes, for /healthz."""
        counts = {"here": 0, "elsewhere": 0, "free": 0}
        for state in self.folders.values():
            if state.lease in counts:
                counts[state.lease] += 1
        return {"owner": self.owner, "processes": self.processes, **counts}
