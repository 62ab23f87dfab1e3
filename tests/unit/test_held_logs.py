"""Log lines written inside a transaction stand only if it commits."""

from __future__ import annotations

import asyncio

import pytest

from maild.logging import _StderrLines, held_until_done


def test_lines_wait_for_the_end_of_the_block(capsys: pytest.CaptureFixture[str]) -> None:
    """Inside the block nothing is written; at its clean end every line is, in order."""
    out = _StderrLines("maild.test")
    with held_until_done():
        out.msg("first")
        out.msg("second")
        assert capsys.readouterr().err == ""
    assert capsys.readouterr().err == "first\nsecond\n"


def test_a_block_that_raises_drops_its_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """A rolled back transaction leaves no line saying what it decided."""
    out = _StderrLines("maild.test")
    with pytest.raises(RuntimeError), held_until_done():
        out.msg("decided, then rolled back")
        raise RuntimeError("rollback")
    out.msg("after")
    assert capsys.readouterr().err == "after\n"


def test_an_inner_block_hands_its_lines_to_the_outer_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nested blocks: the outer block's end decides for all."""
    out = _StderrLines("maild.test")
    with pytest.raises(RuntimeError), held_until_done():
        with held_until_done():
            out.msg("inner")
        assert capsys.readouterr().err == ""
        raise RuntimeError("outer rolls back")
    assert capsys.readouterr().err == ""


async def test_other_tasks_write_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Only the task holding its lines waits; another folder's lines are not held."""
    out = _StderrLines("maild.test")
    entered, release = asyncio.Event(), asyncio.Event()

    async def transaction() -> None:
        with held_until_done():
            out.msg("held")
            entered.set()
            await release.wait()

    task = asyncio.ensure_future(transaction())
    await entered.wait()
    out.msg("other")
    assert capsys.readouterr().err == "other\n"
    release.set()
    await task
    assert capsys.readouterr().err == "held\n"


async def test_a_task_started_in_the_block_writes_once_it_has_ended(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A task inherits the block's context; its lines after the block are written, not lost."""
    out = _StderrLines("maild.test")
    later = asyncio.Event()

    async def background() -> None:
        await later.wait()
        out.msg("from a task started inside")

    with held_until_done():
        task = asyncio.ensure_future(background())
    later.set()
    await task
    assert capsys.readouterr().err == "from a task started inside\n"
