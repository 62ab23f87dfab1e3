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


def test_demo_shows_leads(tmp_path: Path) -> None:
    """The demo finds leads by folder, threads a reply into its lead and keeps robots out."""
    _require_dovecot()
    summary = run_demo(tmp_path / "demo")
    assert "scenario sales: 3 lead(s)" in summary
    assert "scenario support: 2 lead(s)" in summary
    assert "Иван Сидоров, ООО «СтройТорг» <ivan@stroy-torg.example>" in summary
    assert "Re: Tracking number?: reply to lead #" in summary
    assert (
        'Responsible m.ivanova for Запрос цены: 40 поддонов: personal sender name "Мария Иванова" in To'
        in summary
    )
    assert "own letter: sent from sales@corp.example" in summary
    assert "automatic letter (bounce, list or auto-reply): not a lead" in summary


def test_demo_shows_autoreply(tmp_path: Path) -> None:
    """The demo's support@ is on holiday: one auto-reply with a null sender, a partner and a list not."""
    _require_dovecot()
    summary = run_demo(tmp_path / "demo")
    assert (
        "relay got an auto-reply to zoe@poznan-parts.example (MAIL FROM:<>): Auto: Delivery damaged"
        in summary
    )
    assert "auto-replies sent: 1, each stored as outgoing" in summary
    assert "This week in logistics             suppressed: mailing list (List-Id)" in summary
    assert 'suppressed: rule "no auto-reply to partners" says no auto-reply' in summary
