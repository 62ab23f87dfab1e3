"""Render dry-run results as text lines for people or JSON for scripts; letter text is made harmless."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from maild.core.decision import (
    AddFlag,
    Copy,
    Decision,
    Effect,
    Forward,
    MarkLead,
    Move,
    NotLead,
    RemoveFlag,
    SetResponsible,
)
from maild.core.letter import ParsedLetter
from maild.dryrun.outlook import Outlook
from maild.dryrun.replay import Replayed, ReplaySummary
from maild.dryrun.trial import Trial

SUBJECT_WIDTH = 60
IMPLICIT_KEEP = "implicit keep: no rule matched, the letter stays where it is"
NOBODY = "nobody: no rule sets one, and no personal sender name of [[users]] is addressed"


def printable(text: str) -> str:
    """Escape control and formatting characters, so a letter cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def shorten(text: str, width: int = SUBJECT_WIDTH) -> str:
    """Make text printable and cut it to a width, marking the cut with an ellipsis."""
    text = printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_effect(effect: Effect) -> str:
    """Say what an effect would do, in a few words."""
    match effect:
        case Forward(to=to, mode=mode):
            return f"forward to {to} ({mode})"
        case Move(folder=folder, marks_deleted=marks_deleted):
            return f"move to {printable(folder)}" + (" (marks it deleted)" if marks_deleted else "")
        case Copy(folder=folder):
            return f"copy to {printable(folder)}"
        case AddFlag(flag=flag):
            return f"add flag {flag}"
        case RemoveFlag(flag=flag):
            return f"remove flag {flag}"
        case SetResponsible(login=login):
            return f"set responsible {login}"
        case MarkLead():
            return "count it as a lead"
        case NotLead():
            return "never count it as a lead"
    return printable(effect.key())


def _effects(effects: Sequence[Effect]) -> str:
    return "; ".join(describe_effect(effect) for effect in effects)


def rule_lines(decision: Decision, rules: Sequence[str]) -> list[str]:
    """Give one line per rule: hit with its effects, miss with the failed condition, or not tried."""
    lines = []
    for result in decision.results:
        name = printable(result.rule)
        if not result.matched:
            lines.append(f"  miss  {name}: {printable(result.failed or '')}")
            continue
        stop = " (stop)" if result.rule == decision.stopped_by else ""
        effects = f" -> {_effects(result.effects)}" if result.effects else ""
        lines.append(f"  hit   {name}{stop}{effects}")
    for name in rules[len(decision.results) :]:
        stopper = printable(decision.stopped_by or "")
        lines.append(f'  --    {printable(name)}: not tried, "{stopper}" stopped evaluation')
    return lines


def outlook_lines(view: Outlook) -> list[str]:
    """Render the lead verdict and the Responsible the daemon would record."""
    lead = view.lead
    if lead is None:
        lines = ["lead: none: the account counts no letters as leads"]
    else:
        lines = [f"lead: {'opens one' if lead.opens else 'none'}: {printable(lead.reason)}"]
        if lead.opens:
            lines.append(f"  shown in scenarios: {', '.join(lead.scenarios) or 'none'}")
        if lead.may_join:
            cites = "; ".join(printable(item) for item in lead.may_join)
            lines.append(f"  joins the lead of a stored letter instead, if one matches: {cites}")
    chosen = view.responsible
    if chosen is None:
        lines.append(f"responsible: {NOBODY}")
    elif chosen.login is None:
        lines.append(f"responsible: nobody: {printable(chosen.reason)}")
    else:
        lines.append(f"responsible: {chosen.login} ({printable(chosen.reason)})")
    return lines


def trial_lines(trial: Trial, rules: Sequence[str], view: Outlook) -> list[str]:
    """Render a tried letter: the letter, every rule, the effects, the stop or the implicit keep,
    then the lead and the Responsible."""
    letter, decision = trial.letter, trial.decision
    lines = [
        f"letter {printable(letter.message_id) or '(no Message-ID)'}: "
        f'"{shorten(letter.subject, 200)}"',
        f"  in account {trial.account}, folder {printable(trial.folder)}, {trial.size} bytes; "
        f"ruleset {decision.ruleset_version}",
        "rules:" if rules else "rules: none configured",
        *rule_lines(decision, rules),
    ]
    if decision.effects:
        lines.append("effects:")
        lines.extend(f"  {describe_effect(effect)}" for effect in decision.effects)
    else:
        lines.append("effects: none")
    if decision.stopped_by is not None:
        lines.append(f"stopped by: {printable(decision.stopped_by)}")
    if decision.implicit_keep:
        lines.append(IMPLICIT_KEEP)
    return lines + outlook_lines(view)


def _letter_fields(letter: ParsedLetter, decision: Decision) -> dict[str, Any]:
    return {"message_id": letter.message_id, "subject": letter.subject, **decision.as_dict()}


def trial_json(trial: Trial, view: Outlook) -> dict[str, Any]:
    """Give the JSON document of a tried letter: where, Decision.as_dict(), lead and Responsible."""
    return {
        "account": trial.account,
        "folder": trial.folder,
        "size": trial.size,
        **_letter_fields(trial.letter, trial.decision),
        **view.as_dict(),
    }


def _status(item: Replayed) -> str:
    if item.header_only:
        return "[oversize: header only] "
    if item.status != "stored":
        return f"[{printable(item.status)}] "
    return ""


def replayed_line(item: Replayed) -> str:
    """Render one replayed letter on one line: id, place, subject, the rules that hit and the effects."""
    head = f"letter {item.letter_id}  {item.account}:{printable(item.folder)}  {_status(item)}"
    if item.decision is None or item.letter is None:
        return f"{head}not evaluated: {printable(item.error or '')}"
    decision = item.decision
    subject = f'"{shorten(item.letter.subject)}"'
    if decision.implicit_keep:
        return f"{head}{subject}  implicit keep"
    hits = ", ".join(
        printable(hit.rule) + (" (stop)" if hit.rule == decision.stopped_by else "")
        for hit in decision.hits
    )
    effects = f" -> {_effects(decision.effects)}" if decision.effects else ""
    return f"{head}{subject}  hit: {hits}{effects}"


def replayed_json(item: Replayed) -> dict[str, Any]:
    """Give one replayed letter as a JSON object: the same fields as `rules test --json`, and more."""
    out: dict[str, Any] = {
        "letter_id": item.letter_id,
        "status": item.status,
        "received_at": item.received_at.isoformat(),
        "account": item.account,
        "folder": item.folder,
        "size": item.size,
    }
    if item.decision is None or item.letter is None:
        out["error"] = item.error
        return out
    view = item.outlook.as_dict() if item.outlook is not None else {}
    return out | _letter_fields(item.letter, item.decision) | view


def summary_lines(summary: ReplaySummary) -> list[str]:
    """Render the totals: letters tried, matched per rule, effects per kind, implicit keeps."""
    notes = []
    if summary.not_evaluated:
        notes.append(f"{summary.not_evaluated} not evaluated: cannot be parsed")
    if summary.header_only:
        notes.append(f"{summary.header_only} oversize, evaluated on the header only")
    tried = f"letters tried: {summary.tried}" + (f" ({'; '.join(notes)})" if notes else "")
    lines = [tried, "matched per rule:" if summary.matched else "matched per rule: no rules"]
    lines.extend(f"  {printable(name)}: {count}" for name, count in summary.matched.items())
    lines.append("effects per kind:" if summary.effects else "effects per kind: none")
    lines.extend(f"  {kind}: {count}" for kind, count in summary.effects.items())
    lines.append(f"implicit keeps: {summary.implicit_keeps}")
    lines.append(f"leads opened: {summary.leads_opened}")
    return lines


def summary_json(summary: ReplaySummary) -> dict[str, Any]:
    """Give the totals as the last JSON line of a replay."""
    return {
        "summary": {
            "tried": summary.tried,
            "not_evaluated": summary.not_evaluated,
            "header_only": summary.header_only,
            "implicit_keeps": summary.implicit_keeps,
            "leads_opened": summary.leads_opened,
            "matched": summary.matched,
            "effects": summary.effects,
        }
    }


def to_json(document: dict[str, Any]) -> str:
    """Serialise one document on one line; non-ASCII escaped, so no byte can reach the terminal raw."""
    return json.dumps(document, separators=(",", ":"))
