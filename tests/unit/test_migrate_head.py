"""The schema check knows the newest migration without loading Alembic's scripts."""

from __future__ import annotations

from maild.db import migrate


def test_head_revision_constant_is_the_newest_script() -> None:
    """A new migration must move HEAD_REVISION too, or every maild would refuse the new schema."""
    assert migrate.head_revision() == migrate.HEAD_REVISION
