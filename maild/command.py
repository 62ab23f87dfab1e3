"""The ``maild`` command's entry point, kept light: every parser worker re-imports it when it starts.

A spawned process runs its parent's main script again before anything else, and for the
``maild`` command that script imports this module: had it been ``maild.cli``, each worker
would carry the whole daemon (click, pydantic, SQLAlchemy, structlog), about 25 MB it never
uses.
"""

from __future__ import annotations


def main() -> None:
    """Run the command line; the daemon is imported only here, in the process that runs it."""
    from maild.cli import main as run

    run()
