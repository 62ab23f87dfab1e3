"""Shared fixtures: real servers (Dovecot, aiosmtpd) and real databases (SQLite, PostgreSQL)."""

from collections.abc import Iterator

import pytest

from tests.reliability.helpers import plain_tracebacks

pytest_plugins = ["tests.fixtures_db", "tests.fixtures_servers"]


@pytest.fixture(autouse=True, scope="session")
def _plain_tracebacks() -> Iterator[None]:
    """Log tracebacks plainly in every test: structlog's default shows locals, seconds per error."""
    with plain_tracebacks():
        yield
