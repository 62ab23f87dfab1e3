"""Writing the printout: the whole new file or the old one, never a half-written file."""

from __future__ import annotations

from pathlib import Path

import pytest

from maild.errors import PrintError
from maild.printing.output import write_atomically


def test_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    """An existing file is replaced by the new content, and no temporary file stays behind."""
    out = tmp_path / "print.html"
    out.write_bytes(b"old")
    write_atomically(out, "новое".encode())
    assert out.read_text(encoding="utf-8") == "новое"
    assert [p.name for p in tmp_path.iterdir()] == ["print.html"]


def test_a_missing_directory_is_a_print_error(tmp_path: Path) -> None:
    """Writing into a directory that does not exist fails with a PrintError naming the file."""
    out = tmp_path / "nowhere" / "print.html"
    with pytest.raises(PrintError, match=r"cannot write .*print\.html"):
        write_atomically(out, b"x")


def test_a_failed_rename_keeps_the_old_file(tmp_path: Path) -> None:
    """When the target cannot be replaced (it is a directory), the temporary file is removed."""
    out = tmp_path / "print.html"
    out.mkdir()
    with pytest.raises(PrintError, match="cannot write"):
        write_atomically(out, b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["print.html"] and out.is_dir()
