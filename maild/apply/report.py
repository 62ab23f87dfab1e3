"""Render what `maild rules apply` did: summary lines for people, one JSON document for scripts."""

from __future__ import annotations

from typing import Any

from maild.apply.run import ApplyReport, DeadRow, Skipped
from maild.dryrun.report import printable

#: Skipped letters and dead rows listed one by one in the text summary; the rest are counted.
LISTED = 20


def summary_lines(report: ApplyReport) -> list[str]:
    """Render the totals, then the skipped letters and the dead rows with their reasons."""
    queued = sum(report.queued.values())
    kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(report.queued.items()))
    lines = [
        f"letters evaluated: {report.evaluated}; skipped: {len(report.skipped)}"
        + (f"; header block read for {report.headers_read}" if report.headers_read else ""),
        "hits per rule:" if report.hits else "hits per rule: no rules",
        *(f"  {printable(name)}: {count}" for name, count in report.hits.items()),
        f"effects queued: {queued}" + (f" ({kinds})" if kinds else ""),
        f"already queued before: {report.already_queued}",
    ]
    if report.fused:
        lines.append(f"forwards dropped by the fuse: {report.fused}")
    if report.responsible_set or report.marked_deleted:
        lines.append(
            f"Responsible set by a rule: {report.responsible_set}; "
            f"marked deleted: {report.marked_deleted}"
        )
    if report.not_applied:
        said = ", ".join(f"{kind}: {n}" for kind, n in sorted(report.not_applied.items()))
        lines.append(f"not applied to stored letters (recorded in rule_hits only): {said}")
    lines.append(
        f"performed: {report.performed}; dead: {len(report.dead)}; "
        f"retried: {report.retried}; still pending: {report.pending}"
    )
    lines.extend(_listed("skipped", [_skipped(item) for item in report.skipped]))
    lines.extend(_listed("dead", [_dead(item) for item in report.dead]))
    return lines


def _listed(title: str, items: list[str]) -> list[str]:
    """Give a titled list of at most LISTED items and a count of the rest."""
    if not items:
        return []
    more = [f"  ... and {len(items) - LISTED} more"] if len(items) > LISTED else []
    return [f"{title}:", *(f"  {item}" for item in items[:LISTED]), *more]


def _skipped(item: Skipped) -> str:
    """Render one skipped letter with its reason."""
    return f"letter {item.letter_id}  {item.account}:{printable(item.folder)}  {item.reason}"


def _dead(item: DeadRow) -> str:
    """Render one dead row with the dispatcher's reason."""
    return (
        f"outbox {item.id}  letter {item.letter_id}  {item.kind} {printable(item.target)}: "
        f"{printable(item.reason)}"
    )


def summary_json(report: ApplyReport) -> dict[str, Any]:
    """Give the whole report as one JSON document."""
    return {
        "evaluated": report.evaluated,
        "headers_read": report.headers_read,
        "hits": report.hits,
        "hits_recorded": report.hits_recorded,
        "queued": report.queued,
        "already_queued": report.already_queued,
        "fused": report.fused,
        "responsible_set": report.responsible_set,
        "marked_deleted": report.marked_deleted,
        "not_applied": report.not_applied,
        "performed": report.performed,
        "retried": report.retried,
        "pending": report.pending,
        "skipped": [
            {
                "letter_id": item.letter_id,
                "account": item.account,
                "folder": item.folder,
                "reason": item.reason,
            }
            for item in report.skipped
        ],
        "dead": [
            {
                "id": item.id,
                "letter_id": item.letter_id,
                "kind": item.kind,
                "target": item.target,
                "reason": item.reason,
            }
            for item in report.dead
        ],
    }
