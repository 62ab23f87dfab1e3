"""SQLite keeps no copy of a big letter once its statement is done, so one peak does not stay."""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from maild.db.engine import create_engine

BIG = 8_000_000
#: The most a fresh connection's page cache (2 MB by default) and schema may add.
CONNECTION_OVERHEAD = 4_000_000


def _sqlite_memory_used() -> int:
    """Give the bytes SQLite's allocator holds in this process (the library Python is linked to)."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.fail("libsqlite3 not found: the sqlite3 module must link to it dynamically")
    library = ctypes.CDLL(name)
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return int(library.sqlite3_memory_used())


def test_a_cached_statement_keeps_its_last_blob(tmp_path: Path) -> None:
    """The control: Python's statement cache keeps the blob it bound last (so the probe sees it)."""
    before = _sqlite_memory_used()
    connection = sqlite3.connect(tmp_path / "control.db")
    try:
        connection.execute("CREATE TABLE t (b BLOB)")
        connection.execute("INSERT INTO t VALUES (?)", (b"x" * BIG,))
        connection.commit()
        assert _sqlite_memory_used() - before > BIG
    finally:
        connection.close()


async def test_maild_s_engine_keeps_no_copy_of_a_stored_blob(tmp_path: Path) -> None:
    """After storing a big value, maild's SQLite connection holds no copy of it."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'maild.db'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (b BLOB)"))
        before = _sqlite_memory_used()
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t VALUES (:b)"), {"b": b"x" * BIG})
        assert _sqlite_memory_used() - before < CONNECTION_OVERHEAD
    finally:
        await engine.dispose()
