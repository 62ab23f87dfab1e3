"""`maild demo` end to end: its own Dovecot and relay, the rules firing, a readable summary."""

from __future__ import annotations

from pathlib import Path

from maild.demo import run_demo
from tests.fixtures_servers import _require_dovecot


def test_demo_shows_rules_firing(tmp_path: Path) -> None:
    """The demo stores the samples once, and its rules forward, move, flag and mark for deletion."""
    _require_dovecot()
    summary = run_demo(tmp_path / "demo")
    assert "stored  6  kept raw as failed 1" in summary
    assert "relay got a forward to accounting@corp.example: Fwd: Счёт на оплату" in summary
    assert "sales/Invoices: 1 letter(s), flags $Invoice" in summary
    assert "support/Trash: 1 letter(s), flags \\Deleted" in summary
    assert "marked for deletion in the database: This week in logistics" in summary
    assert "-> responsible m.ivanova" in summary
    assert "dead 0" in summary and "NOT OK" not in summary
