"""The built-in rule actions: each compiles its config value once into effects (data, never I/O)."""

from __future__ import annotations

import re
from typing import Any

from maild.core.addresses import address_problem
from maild.core.decision import (
    FORWARD_MODES,
    AccountInfo,
    AddFlag,
    Autoreply,
    Copy,
    Effect,
    Forward,
    ForwardMode,
    LetterFacts,
    MarkLead,
    Move,
    NotLead,
    RemoveFlag,
    SetResponsible,
)
from maild.core.robots import has_loop_marker, is_auto_submitted
from maild.rules.registry import ACTIONS, BuildContext, CompiledAction, render

SYSTEM_FLAGS = {"seen": "\\Seen", "flagged": "\\Flagged"}
_KEYWORD = re.compile(r"^\$?[A-Za-z0-9_.\-]{1,64}$")
_LOGIN = re.compile(r"^[^\s\x00-\x1f\x7f]{1,255}$")


def check_address(value: str) -> str | None:
    """Check a forward address strictly; give the reason it is refused, or None when it is fine.

    The target is a literal of the config: a ``{...}`` placeholder is refused, since maild
    never fills a forward target in from the letter (that would make it an open relay).
    """
    if "{" in value or "}" in value:
        return "must be a literal address: maild never fills a forward target in from the letter"
    return address_problem(value)


def _constant(name: str, *effects: Effect, stops: bool = False) -> CompiledAction:
    def run(facts: LetterFacts, account: AccountInfo | None) -> tuple[Effect, ...]:
        return effects

    return CompiledAction(name=name, run=run, stops=stops)


def _folder(value: Any, path: str, ctx: BuildContext) -> str | None:
    if not isinstance(value, str) or not value.strip() or any(ch in value for ch in "\r\n\x00"):
        ctx.problem(path, f"must be a folder name, not {render(value)}")
        return None
    return value.strip()


@ACTIONS.register(
    "forward",
    summary='Forward the letter: { to = "ADDRESS", mode = "attach" | "resend" | "redirect" }.',
)
def forward_action(value: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile ``forward = { to = "...", mode = "attach" }``."""
    if not isinstance(value, dict):
        ctx.problem(
            path, f'must be a table such as {{ to = "x@example.com" }}, not {render(value)}'
        )
        return None
    ok = True
    for key in value:
        if key not in ("to", "mode", "skip_auto_submitted"):
            ctx.problem(
                f"{path}.{key}",
                'unknown key for "forward" (it takes: to, mode, skip_auto_submitted)',
            )
            ok = False
    skip_robots = value.get("skip_auto_submitted", False)
    if not isinstance(skip_robots, bool):
        ctx.problem(
            f"{path}.skip_auto_submitted", f"must be true or false, not {render(skip_robots)}"
        )
        ok = False
    to = value.get("to")
    if to is None:
        ctx.problem(f"{path}.to", "is required: the address to forward to")
        ok = False
    elif not isinstance(to, str):
        ctx.problem(f"{path}.to", f"must be an address, not {render(to)}")
        ok = False
    else:
        to = to.strip()
        reason = check_address(to)
        if reason is not None:
            ctx.problem(f"{path}.to", f"invalid forward address {render(to)}: {reason}")
            ok = False
    mode = value.get("mode", "attach")
    if mode not in FORWARD_MODES:
        options = ", ".join(f'"{item}"' for item in FORWARD_MODES)
        ctx.problem(f"{path}.mode", f"must be one of {options}, not {render(mode)}")
        ok = False
    if not ok:
        return None
    assert isinstance(to, str)
    local, _, domain = to.partition("@")
    checked_mode: ForwardMode = mode
    effect = (Forward(to=f"{local}@{domain.lower()}", mode=checked_mode),)

    def run(facts: LetterFacts, account: AccountInfo | None) -> tuple[Effect, ...]:
        if (
            account is not None
            and account.address
            and has_loop_marker(facts.headers, account.address)
        ):
            return ()  # this account forwarded the letter before: it came back round a loop
        if skip_robots and is_auto_submitted(facts.headers):
            return ()
        return effect

    return CompiledAction(name="forward", run=run, reads_letter=True)


@ACTIONS.register(
    "move",
    summary="Move the letter to a folder; the account's deleted folder marks it deleted.",
)
def move_action(value: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile ``move = "FOLDER"``; the effect depends on the account's deleted folder."""
    folder = _folder(value, path, ctx)
    if folder is None:
        return None
    deleted = Move(folder=folder, marks_deleted=True)
    kept = Move(folder=folder, marks_deleted=False)

    def run(facts: LetterFacts, account: AccountInfo | None) -> tuple[Effect, ...]:
        return (deleted,) if account is not None and account.deleted == folder else (kept,)

    return CompiledAction(name="move", run=run)


@ACTIONS.register("copy", summary="Copy the letter to a folder.")
def copy_action(value: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile ``copy = "FOLDER"``."""
    folder = _folder(value, path, ctx)
    return None if folder is None else _constant("copy", Copy(folder=folder))


def _flag(value: Any, path: str, ctx: BuildContext) -> str | None:
    if isinstance(value, str):
        name = value.strip()
        if name.lower() in SYSTEM_FLAGS:
            return SYSTEM_FLAGS[name.lower()]
        if name.lower() in ("deleted", "\\deleted"):
            ctx.problem(path, "to delete a letter, move it to the account's deleted folder")
            return None
        if _KEYWORD.match(name):
            return name
    ctx.problem(
        path,
        f'must be "seen", "flagged" or a keyword of letters, digits, _ . - '
        f"(optionally starting with $), not {render(value)}",
    )
    return None


@ACTIONS.register("add_flag", summary='Set a flag: "seen", "flagged" or a keyword.')
def add_flag_action(value: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile ``add_flag = "seen"``."""
    flag = _flag(value, path, ctx)
    return None if flag is None else _constant("add_flag", AddFlag(flag=flag))


@ACTIONS.register("remove_flag", summary='Clear a flag: "seen", "flagged" or a keyword.')
def remove_flag_action(value: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile ``remove_flag = "seen"``."""
    flag = _flag(value, path, ctx)
    return None if flag is None else _constant("remove_flag", RemoveFlag(flag=flag))


@ACTIONS.register("set_responsible", summary="Make a CRM user (by login) responsible.")
def set_responsible_action(value: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile ``set_responsible = "LOGIN"``."""
    if not isinstance(value, str) or not _LOGIN.match(value.strip()):
        ctx.problem(path, f"must be a user login without spaces, not {render(value)}")
        return None
    return _constant("set_responsible", SetResponsible(login=value.strip()))


@ACTIONS.register("mark_lead", summary="Count the letter as a lead wherever it is.")
def mark_lead_action(value: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile ``mark_lead = true``."""
    if value is not True:
        ctx.problem(path, f"must be true, not {render(value)}")
        return None
    return _constant("mark_lead", MarkLead())


@ACTIONS.register("not_lead", summary="Never count the letter as a lead.")
def not_lead_action(value: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile ``not_lead = true``."""
    if value is not True:
        ctx.problem(path, f"must be true, not {render(value)}")
        return None
    return _constant("not_lead", NotLead())


@ACTIONS.register(
    "autoreply",
    summary='No auto-reply to the letter (false), or another text: { text = "..." }.',
)
def autoreply_action(value: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile ``autoreply = false`` or ``autoreply = { text = "..." }``."""
    if value is False:
        return _constant("autoreply", Autoreply(text=None))
    if isinstance(value, dict):
        unknown = [key for key in value if key != "text"]
        for key in unknown:
            ctx.problem(f"{path}.{key}", 'unknown key for "autoreply" (it takes: text)')
        text = value.get("text")
        if not isinstance(text, str) or not text.strip():
            ctx.problem(f"{path}.text", f"must be the reply's text, not {render(text)}")
            return None
        return None if unknown else _constant("autoreply", Autoreply(text=text))
    ctx.problem(path, f'must be false or a table such as {{ text = "..." }}, not {render(value)}')
    return None


@ACTIONS.register("stop", summary="Stop: later rules are not tried.")
def stop_action(value: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile ``stop = true``."""
    if value is not True:
        ctx.problem(path, f"must be true (remove it to go on to later rules), not {render(value)}")
        return None
    return _constant("stop", stops=True)
