"""Server fixtures: a throwaway Dovecot and an aiosmtpd sink, both real and on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from maild.testing import DovecotServer, SmtpSink, find_dovecot

#: The mailbox users of the session Dovecot, user -> password.
DOVECOT_USERS = {"sales": "sales-pw", "support": "support-pw", "billing": "billing-pw"}


def _require_dovecot() -> None:
    """Skip without Dovecot on a workstation, but fail under CI, where a skip would hide gaps."""
    if find_dovecot() is not None:
        return
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail("Dovecot is not installed: CI must install dovecot-imapd")
    pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd)")


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """Give one Dovecot for the whole session; tests keep apart by using their own folders."""
    _require_dovecot()
    server = DovecotServer(tmp_path_factory.mktemp("dovecot"), DOVECOT_USERS)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_dovecot(tmp_path: Path) -> Iterator[DovecotServer]:
    """Give a Dovecot of the test's own, for faults (kill, restart) the session one must not see."""
    _require_dovecot()
    server = DovecotServer(tmp_path / "dovecot", DOVECOT_USERS)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """Give a running SMTP sink that keeps every message it accepts."""
    with SmtpSink() as sink:
        yield sink
