"""Conversion benchmark: switching N potential clients off, on SQLite and on PostgreSQL.

Run by hand (it is not a test)::

    .venv/bin/python bench/convert.py [--count 10000] [--repeat 3] [--skip-postgres]
                                      [--postgres-url postgresql+asyncpg://user@host:5432/db]

Each round seeds a fresh database (a new SQLite file; a throwaway PostgreSQL database created
on the server and dropped afterwards) with N potential clients in the ten shapes of
``maild.testing.parties`` (companies, names only, a blank name, addresses and companies that
existing clients already have), each with two letters and a lead pointing at it, then times
``maild.leads.convert.disable``: one transaction per potential client, then the setting off.
The figures are checked against what the seed must give. PostgreSQL is held to under 30 s
for 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from maild.db import migrate  # noqa: E402
from maild.db.engine import create_engine, session_factory  # noqa: E402
from maild.leads.convert import POSTGRES_WORKERS, disable  # noqa: E402
from maild.testing.parties import expected, seed  # noqa: E402
from maild.testing.postgres import pg_admin  # noqa: E402

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_ENV = "MAILD_BENCH_POSTGRES_URL"
TARGET_PG_SECONDS = 30.0


async def one_round(url: str, count: int) -> tuple[float, float]:
    """Seed and convert on a fresh database; give the seconds of each, checking the figures."""
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        sessions = session_factory(engine)
        started = time.perf_counter()
        async with sessions.begin() as session:
            await seed(session, count)
        seeded = time.perf_counter() - started
        started = time.perf_counter()
        report = await disable(sessions)
        converted = time.perf_counter() - started
    finally:
        await engine.dispose()
    want = expected(count)
    got = (report.converted, report.clients_created, report.contacts_created, report.matched)
    wanted = (count, want.clients_created, want.contacts_created, want.matched)
    if got != wanted or report.documents_updated != want.letters + want.leads:
        raise SystemExit(
            f"wrong figures: {got} documents {report.documents_updated}, want {wanted}"
        )
    return seeded, converted


async def sqlite_round(count: int) -> tuple[float, float]:
    """Run a round on a new SQLite file in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="maild-convert-") as tmp:
        return await one_round(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", count)


async def postgres_round(base: str, count: int) -> tuple[float, float]:
    """Run a round on a throwaway PostgreSQL database, dropped afterwards."""
    name = f"maild_bench_convert_{uuid.uuid4().hex[:10]}"
    await pg_admin(base, f'CREATE DATABASE "{name}"')
    try:
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
        return await one_round(url, count)
    finally:
        await pg_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def report(label: str, count: int, rounds: list[tuple[float, float]]) -> float:
    """Print each round and the median; give the median conversion time."""
    for index, (seeded, converted) in enumerate(rounds, 1):
        print(
            f"  {label} round {index}: seed {seeded:6.2f} s, convert {converted:6.2f} s "
            f"({count / converted:7.0f} potential clients/s, {converted / count * 1000:.2f} ms each)"
        )
    median = statistics.median(converted for _, converted in rounds)
    print(f"  {label} median: {median:.2f} s, {count / median:.0f} potential clients/s")
    return median


def main() -> None:
    """Parse the options, run the rounds, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="potential clients (10,000)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per database; medians")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(PG_ENV, DEFAULT_PG),
        help=f"a server where the user may create databases (env {PG_ENV}, default {DEFAULT_PG})",
    )
    args = parser.parse_args()
    print(
        f"converting {args.count} potential clients (2 letters and a lead each), "
        f"{args.repeat} round(s); {os.cpu_count()} cores"
    )
    sqlite = [asyncio.run(sqlite_round(args.count)) for _ in range(args.repeat)]
    report("SQLite", args.count, sqlite)
    if args.skip_postgres:
        return
    postgres = [
        asyncio.run(postgres_round(args.postgres_url, args.count)) for _ in range(args.repeat)
    ]
    median = report(f"PostgreSQL ({POSTGRES_WORKERS} workers)", args.count, postgres)
    scaled = median * 10_000 / args.count
    verdict = "met" if scaled < TARGET_PG_SECONDS else "MISSED"
    print(
        f"  target: 10,000 under {TARGET_PG_SECONDS:.0f} s on PostgreSQL: {verdict} ({scaled:.1f} s)"
    )


if __name__ == "__main__":
    main()
