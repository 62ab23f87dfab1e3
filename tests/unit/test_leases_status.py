"""What several processes change in /healthz and the config: the split shown, one port each."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from maild.core.status import StatusBoard
from maild.errors import ConfigError
from maild.settings import Config

KEYS = {"connected", "last_sync", "last_error", "last_error_at", "stored", "failed", "duplicates"}


def test_folders_polled_elsewhere_do_not_make_this_process_unhealthy() -> None:
    """Only the folders this process holds count for `ok`; the split is summarised."""
    board = StatusBoard(owner="h:1:a", processes=2)
    board.leased("sales", "INBOX", "here", "h:1:a")
    board.synced("sales", "INBOX")
    board.leased("sales", "Leads", "elsewhere", "h:2:b")
    board.leased("support", "INBOX", "free")
    report = board.as_dict()
    assert report["ok"] is True
    assert report["leases"] == {
        "owner": "h:1:a",
        "processes": 2,
        "here": 1,
        "elsewhere": 1,
        "free": 1,
    }
    folders = report["accounts"]["sales"]["folders"]  # type: ignore[index]
    assert set(folders["INBOX"]) == KEYS | {"lease"}
    assert folders["Leads"]["lease"] == {"state": "elsewhere", "owner": "h:2:b", "until": None}
    board.error("sales", "INBOX", "IMAP down")
    assert board.as_dict()["ok"] is False


def test_without_leases_the_report_is_as_before() -> None:
    """A single pass (no leases) reports every folder and no lease summary."""
    board = StatusBoard()
    board.error("sales", "INBOX", "IMAP down")
    report = board.as_dict()
    assert report["ok"] is False and "leases" not in report
    assert report["accounts"]["sales"]["folders"]["INBOX"]["lease"] is None  # type: ignore[index]


def test_outbox_rows_show_by_status() -> None:
    """Once the dispatcher has counted them, /healthz shows the outbox rows by status."""
    board = StatusBoard()
    assert "outbox" not in board.as_dict()
    board.outbox = {"done": 7, "dead": 2}
    assert board.as_dict()["outbox"] == {"pending": 0, "dead": 2, "done": 7}
    assert board.as_dict()["ok"] is True  # a dead row needs an admin, not a restart


def _config(**daemon: object) -> Config:
    return Config.model_validate({"daemon": daemon})


def test_health_listen_comes_from_the_environment_per_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MAILD_HEALTH_LISTEN wins over the file, is checked the same way, and may turn it off."""
    config = _config(health_listen="127.0.0.1:9465")
    assert config.health_listen() == "127.0.0.1:9465"
    monkeypatch.setenv("MAILD_HEALTH_LISTEN", " 127.0.0.1:9462 ")
    assert config.health_listen() == "127.0.0.1:9462"
    monkeypatch.setenv("MAILD_HEALTH_LISTEN", "")
    assert config.health_listen() == ""
    monkeypatch.setenv("MAILD_HEALTH_LISTEN", "9462")
    with pytest.raises(ConfigError, match="MAILD_HEALTH_LISTEN: must be HOST:PORT"):
        config.health_listen()


def test_lease_seconds_has_a_floor() -> None:
    """A lease under a second would be renewed faster than a database round trip is sure to take."""
    assert _config().daemon.lease_seconds == 30
    with pytest.raises(ValidationError, match="lease_seconds"):
        _config(lease_seconds=0.5)
