"""Shared fixtures: real servers (Dovecot, aiosmtpd) and real databases (SQLite, PostgreSQL)."""

pytest_plugins = ["tests.fixtures_db", "tests.fixtures_servers"]
