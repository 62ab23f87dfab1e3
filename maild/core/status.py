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

    def as_dict(self) -> dict[str, object]:
        """Render for the /healthz JSON."""
        return {
            "connected": self.connected,
            "last_sync": self.last_sync.isoformat() if self.last_sync else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "stored": self.stored,
            "failed": self.failed,
            "duplicates": self.duplicates,
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

    def healthy(self) -> bool:
        """Tell whether every folder is connected with no outstanding error."""
        return all(s.connected and s.last_error is None for s in self.folders.values())

    def as_dict(self) -> dict[str, object]:
        """Render for the /healthz JSON, grouped by account."""
        accounts: dict[str, dict[str, object]] = {}
        for (account, folder), state in sorted(self.folders.items()):
            entry = accounts.setdefault(account, {"ok": True, "folders": {}})
            folders = entry["folders"]
            assert isinstance(folders, dict)
            folders[folder] = state.as_dict()
            if not state.connected or state.last_error is not None:
                entry["ok"] = False
        report: dict[str, object] = {"ok": self.healthy(), "accounts": accounts}
        if self.autoreply:
            report["autoreply"] = {
                name: status.as_dict() for name, status in sorted(self.autoreply.items())
            }
        return report
