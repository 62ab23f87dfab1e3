"""The built-in rule conditions: each compiles its config table once into a fast function.

Text conditions name what they look at and take one operator::

    { header = "subject", contains = "invoice" }
    { address = "from", is = "boss@corp.example" }
    { domain = "recipient", is = ["client.example", "partner.example"] }

A compiled condition returns None when it holds and otherwise a constant string naming the
failed condition (``match.all[0]: header = "subject", contains = "invoice"``), so a miss costs
no allocation. Derived views of the letter (lower-cased subject, recipient domains) are computed
once per letter, in ``LetterFacts.memo``, and shared by every rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from email.header import decode_header, make_header
from typing import Any

from maild.core.decision import LetterFacts
from maild.core.letter import Address
from maild.rules.gates import Gate, NeedleAtom, ValueAtom, gate_all, gate_any
from maild.rules.needles import Encoded, Found, ViewNeedles
from maild.rules.registry import (
    CONDITIONS,
    OPERATORS,
    BuildContext,
    CompiledCondition,
    render,
)

Values = tuple[str, ...]
Extract = Callable[[LetterFacts], Values]

_DESCRIPTION_LIMIT = 160
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field name: printable ASCII, no colon
_TAG = re.compile(r"<[^>]*>")
_ADDRESS_PARTS = ("from", "to", "cc", "reply_to", "recipient")


def describe(node: Mapping[str, Any], path: str) -> str:
    """Render a leaf condition for a miss: ``match.all[1]: has_attachment = true``."""
    text = ", ".join(f"{key} = {render(value)}" for key, value in node.items())
    if len(text) > _DESCRIPTION_LIMIT:
        text = text[: _DESCRIPTION_LIMIT - 1] + "…"
    return f"{path}: {text}"


# ---------------------------------------------------------------- views of the letter


def _decode(value: str) -> str:
    """Decode RFC 2047 encoded words in a raw header value; keep the raw value if that fails."""
    if "=?" not in value:
        return value
    try:
        return " ".join(str(make_header(decode_header(value))).split())
    except Exception:  # a hostile header must not stop rule evaluation
        return value


def _mailboxes(facts: LetterFacts, part: str) -> tuple[Address, ...]:
    letter = facts.letter
    if part == "from":
        return letter.from_
    if part == "to":
        return letter.to
    if part == "cc":
        return letter.cc
    if part == "reply_to":
        return letter.reply_to
    return letter.to + letter.cc


def normalise_address(address: str) -> str:
    """Normalise an address for comparison: stripped, lower-case, no angle brackets."""
    return address.strip().strip("<>").strip().lower()


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].rstrip(".")


def _header_view(name: str) -> Extract:
    if name == "subject":

        def subject(facts: LetterFacts) -> Values:
            value = facts.letter.subject
            return (value,) if value or "subject" in facts.headers else ()

        return subject
    part = name.replace("-", "_")
    if part in ("from", "to", "cc", "reply_to"):

        def mailboxes(facts: LetterFacts) -> Values:
            boxes = _mailboxes(facts, part)
            if not boxes:
                raw = facts.headers.get(name)
                return () if raw is None else tuple(_decode(v) for v in raw.split("\n"))
            return (
                ", ".join(
                    f"{box.name} <{box.address}>" if box.name else box.address for box in boxes
                ),
            )

        return mailboxes

    def header(facts: LetterFacts) -> Values:
        raw = facts.headers.get(name)
        return () if raw is None else tuple(_decode(v) for v in raw.split("\n"))

    return header


def _address_view(part: str) -> Extract:
    def addresses(facts: LetterFacts) -> Values:
        return tuple(
            value for box in _mailboxes(facts, part) if (value := normalise_address(box.address))
        )

    return addresses


def _domain_view(part: str) -> Extract:
    def domains(facts: LetterFacts) -> Values:
        return tuple(
            value
            for box in _mailboxes(facts, part)
            if (value := _domain_of(normalise_address(box.address)))
        )

    return domains


def _name_view(part: str) -> Extract:
    def names(facts: LetterFacts) -> Values:
        return tuple(name for box in _mailboxes(facts, part) if (name := box.name.strip()))

    return names


def _body_view(part: str) -> Extract:
    if part == "html":

        def html(facts: LetterFacts) -> Values:
            return (facts.letter.html,) if facts.letter.html else ()

        return html

    def text(facts: LetterFacts) -> Values:
        letter = facts.letter
        if letter.text:
            return (letter.text,)
        if letter.html:
            return (" ".join(_TAG.sub(" ", letter.html).split()),)
        return ()

    return text


def _attachment_view(part: str) -> Extract:
    if part == "type":

        def types(facts: LetterFacts) -> Values:
            return tuple(
                value for item in facts.letter.attachments if (value := item.content_type.lower())
            )

        return types

    def names(facts: LetterFacts) -> Values:
        return tuple(item.filename for item in facts.letter.attachments if item.filename)

    return names


def _memo_key(key: str, *, fold: bool) -> str:
    return key + "|folded" if fold else key


def _memoised(key: str, extract: Extract, *, fold: bool) -> Extract:
    """Wrap a view so it is computed once per letter (and lower-cased once, when asked)."""
    if not fold:

        def raw(facts: LetterFacts) -> Values:
            memo = facts.memo
            values: Values | None = memo.get(key)
            if values is None:
                values = memo[key] = extract(facts)
            return values

        return raw
    folded_key = _memo_key(key, fold=True)

    def folded(facts: LetterFacts) -> Values:
        memo = facts.memo
        values: Values | None = memo.get(folded_key)
        if values is None:
            values = memo[folded_key] = tuple(value.lower() for value in extract(facts))
        return values

    return folded


# ---------------------------------------------------------------- operators


def _operands(value: Any, path: str, ctx: BuildContext, *, allow_empty: bool) -> list[str] | None:
    """Read an operator's operand: a string or a non-empty list of strings."""
    items = value if isinstance(value, list) else [value]
    if not items:
        ctx.problem(path, "the list is empty; give at least one value")
        return None
    if not all(isinstance(item, str) for item in items):
        ctx.problem(path, f"must be a string or a list of strings, not {render(value)}")
        return None
    if not allow_empty and any(not item for item in items):
        ctx.problem(path, "must not be an empty string")
        return None
    return list(items)


def _text_condition(
    node: Mapping[str, Any],
    path: str,
    ctx: BuildContext,
    *,
    key: str,
    extract: Extract,
    normalise: Callable[[str], str] | None = None,
) -> CompiledCondition | None:
    """Compile a text condition: one view of the letter, one operator, any of the operands.

    ``normalise`` (addresses, domains) replaces case folding: such values are always compared
    normalised, and ``case_sensitive`` is refused.
    """
    kind = next(name for name in node if name in CONDITIONS)
    operators = [name for name in OPERATORS if name in node]
    if len(operators) != 1:
        found = ", ".join(operators) if operators else "none"
        ctx.problem(
            path, f"give exactly one operator of is, contains, matches, exists (found: {found})"
        )
        return None
    operator = operators[0]
    case_sensitive = node.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        ctx.problem(f"{path}.case_sensitive", "must be true or false")
        return None
    if normalise is not None and "case_sensitive" in node:
        ctx.problem(f"{path}.case_sensitive", f'"{kind}" values are always compared normalised')
        return None
    miss = describe(node, path)
    operand = node[operator]
    op_path = f"{path}.{operator}"

    if operator == "exists":
        if not isinstance(operand, bool):
            ctx.problem(op_path, "must be true or false")
            return None
        view = _memoised(key, extract, fold=False)
        wanted = operand

        def exists(facts: LetterFacts) -> str | None:
            return None if bool(view(facts)) is wanted else miss

        return exists

    items = _operands(operand, op_path, ctx, allow_empty=operator == "is")
    if items is None:
        return None

    needles = _view_needles(ctx, key, extract)
    if operator == "matches":
        return _matches(
            items,
            op_path,
            ctx,
            view=_memoised(key, extract, fold=False),
            needles=needles,
            miss=miss,
            case_sensitive=case_sensitive,
            listed=isinstance(operand, list),
        )
    folded = normalise is None and not case_sensitive
    if normalise is not None:
        items = [normalise(item) for item in items]
    elif folded:
        items = [item.lower() for item in items]
    if operator == "is":
        memo_key = _memo_key(key, fold=folded)
        view = _memoised(key, extract, fold=folded)
        accepted = frozenset(items)
        atom = ValueAtom(memo_key, view, accepted)
        return ctx.gate(_is(accepted, memo_key, view, miss), Gate((atom,), miss))
    if folded:
        needles.add_folded(tuple(items))
        search, search_key = needles.lower, needles.lower_key
    else:
        needles.add_raw(tuple(items))
        search, search_key = needles.raw, needles.raw_key
    atoms = tuple(NeedleAtom(search_key, search, frozenset((item,))) for item in items)
    return ctx.gate(_contains(tuple(items), search, search_key, miss), Gate(atoms, miss))


def _view_needles(ctx: BuildContext, key: str, extract: Extract) -> ViewNeedles:
    """Give the needles shared by every condition of the rule set on one view of the letter."""
    shared_key = ("needles", key)
    needles = ctx.shared.get(shared_key)
    if not isinstance(needles, ViewNeedles):
        needles = ctx.shared[shared_key] = ViewNeedles(
            _memoised(key, extract, fold=False), _body_utf8 if key == "body:text" else None
        )
    return needles


def _body_utf8(facts: LetterFacts) -> Encoded | None:
    """Give the text body as the parser encoded it, so a long body is not encoded again."""
    letter = facts.letter
    if letter.text and letter.text_utf8 is not None:
        return (letter.text_utf8,)
    return None


def _matches(
    patterns: list[str],
    path: str,
    ctx: BuildContext,
    *,
    view: Extract,
    needles: ViewNeedles,
    miss: str,
    case_sensitive: bool,
    listed: bool,
) -> CompiledCondition | None:
    """Compile every regex now, so a bad one is a config error and no letter compiles one.

    A regex with literals every match must contain (``order\\s+\\d+`` needs ``order``) is
    only run on values that contain them all: the literals join the view's shared needles, so
    one search per letter answers for every regex and ``contains`` on that view, many times
    cheaper than a regex scan, above all a case-insensitive one over a long body.
    """
    flags = 0 if case_sensitive else re.IGNORECASE
    compiled = []
    for index, pattern in enumerate(patterns):
        try:
            compiled.append(re.compile(pattern, flags))
        except re.error as exc:
            ctx.problem(f"{path}[{index}]" if listed else path, f"bad regex: {exc}")
    if len(compiled) != len(patterns):
        return None
    steps = []
    atoms: list[NeedleAtom] = []
    for regex in compiled:
        literals, insensitive = required_literals(regex)
        if insensitive:
            needles.add_folded(literals)
            atoms.append(NeedleAtom(needles.regex_key, needles.regex, frozenset(literals)))
        else:
            needles.add_raw(literals)
            atoms.append(NeedleAtom(needles.raw_key, needles.raw, frozenset(literals)))
        steps.append((regex.search, frozenset(literals), insensitive))
    plan = tuple(steps)
    # A value is searched only when it holds every literal: no literals anywhere, no match.
    gate = Gate(tuple(atoms), miss) if all(atom.needles for atom in atoms) else None
    raw_found, regex_found = needles.raw, needles.regex

    def matches(facts: LetterFacts) -> str | None:
        values = view(facts)
        raw: Found | None = None
        folded: Found | None = None
        for index, value in enumerate(values):
            for search, literals, insensitive in plan:
                if literals:
                    if insensitive:
                        if folded is None:
                            folded = regex_found(facts)
                        if not literals <= folded[index]:
                            continue
                    else:
                        if raw is None:
                            raw = raw_found(facts)
                        if not literals <= raw[index]:
                            continue
                if search(value) is not None:
                    return None
        return miss

    return ctx.gate(matches, gate)


def required_literals(pattern: re.Pattern[str]) -> tuple[tuple[str, ...], bool]:
    """Give ASCII literals every match of a regex contains (longest first), and its case mode.

    Only the regex's top-level sequence is read: each of its items is part of every match, so
    each run of literal characters there is a substring of every match. Groups, alternatives
    and repeats end a run and are not looked into. Under IGNORECASE the literals are
    lower-cased, to be compared with a value folded by ``needles.fold_for_regex``.
    """
    try:
        from re import _constants, _parser  # type: ignore[attr-defined]  # CPython's regex parser

        parsed = _parser.parse(pattern.pattern, pattern.flags)
        literal_op = _constants.LITERAL
    except (ImportError, AttributeError, re.error):
        return (), False
    insensitive = bool(parsed.state.flags & re.IGNORECASE)
    runs: list[str] = []
    run: list[str] = []
    for op, value in [*parsed.data, (None, None)]:
        if op is literal_op and isinstance(value, int) and value < 128:
            run.append(chr(value))
            continue
        if run:
            runs.append("".join(run))
        run = []
    runs.sort(key=len, reverse=True)
    return tuple(run.lower() if insensitive else run for run in runs), insensitive


def _is(wanted: frozenset[str], memo_key: str, view: Extract, miss: str) -> CompiledCondition:
    # The memo is read inline: a letter's views are computed once, then only looked up.
    def is_(facts: LetterFacts) -> str | None:
        values: Values | None = facts.memo.get(memo_key)
        for value in view(facts) if values is None else values:
            if value in wanted:
                return None
        return miss

    return is_


def _contains(
    needles: tuple[str, ...],
    found: Callable[[LetterFacts], Found],
    memo_key: object,
    miss: str,
) -> CompiledCondition:
    """Hold when any value of the view holds any needle: a look-up in the shared search."""
    if len(needles) == 1:
        needle = needles[0]

        def contains_one(facts: LetterFacts) -> str | None:
            present: Found | None = facts.memo.get(memo_key)
            for one in found(facts) if present is None else present:
                if needle in one:
                    return None
            return miss

        return contains_one
    wanted = frozenset(needles)

    def contains(facts: LetterFacts) -> str | None:
        present: Found | None = facts.memo.get(memo_key)
        for one in found(facts) if present is None else present:
            if not wanted.isdisjoint(one):
                return None
        return miss

    return contains


_TEXT_KEYS = (*OPERATORS, "case_sensitive")
_NORMALISED_KEYS = OPERATORS


def _choice(
    node: Mapping[str, Any], name: str, path: str, ctx: BuildContext, allowed: tuple[str, ...]
) -> str | None:
    value = node[name]
    if value not in allowed:
        options = ", ".join(f'"{item}"' for item in allowed)
        ctx.problem(f"{path}.{name}", f"must be one of {options}, not {render(value)}")
        return None
    assert isinstance(value, str)
    return value


# ---------------------------------------------------------------- text conditions


@CONDITIONS.register(
    "header",
    summary="A header by name (decoded; `subject` is the decoded subject).",
    keys=_TEXT_KEYS,
)
def header_condition(
    node: Mapping[str, Any], path: str, ctx: BuildContext
) -> CompiledCondition | None:
    """Compile ``{ header = "NAME", <operator> = ... }``."""
    name = node["header"]
    if not isinstance(name, str) or not _HEADER_NAME.match(name.strip()):
        ctx.problem(
            f"{path}.header", f'must be a header name such as "subject", not {render(name)}'
        )
        return None
    name = name.strip().lower()
    return _text_condition(node, path, ctx, key=f"header:{name}", extract=_header_view(name))


def _address_like(
    condition: str, view: Callable[[str], Extract], normalise: Callable[[str], str] | None
) -> Callable[[Mapping[str, Any], str, BuildContext], CompiledCondition | None]:
    def factory(node: Mapping[str, Any], path: str, ctx: BuildContext) -> CompiledCondition | None:
        part = _choice(node, condition, path, ctx, _ADDRESS_PARTS)
        if part is None:
            return None
        return _text_condition(
            node, path, ctx, key=f"{condition}:{part}", extract=view(part), normalise=normalise
        )

    factory.__doc__ = f'Compile ``{{ {condition} = "from", <operator> = ... }}``.'
    return factory


def _normalise_domain(value: str) -> str:
    return normalise_address(value).lstrip("@").rstrip(".")


CONDITIONS.register(
    "address",
    summary="The addresses of from, to, cc, reply_to or recipient (to and cc), normalised.",
    keys=_NORMALISED_KEYS,
)(_address_like("address", _address_view, normalise_address))
CONDITIONS.register(
    "domain",
    summary="The domains of those addresses, normalised.",
    keys=_NORMALISED_KEYS,
)(_address_like("domain", _domain_view, _normalise_domain))
CONDITIONS.register(
    "display_name",
    summary="The display names of those addresses.",
    keys=_TEXT_KEYS,
)(_address_like("display_name", _name_view, None))


@CONDITIONS.register("body", summary='The body: "text" or "html".', keys=_TEXT_KEYS)
def body_condition(
    node: Mapping[str, Any], path: str, ctx: BuildContext
) -> CompiledCondition | None:
    """Compile ``{ body = "text", <operator> = ... }``."""
    part = _choice(node, "body", path, ctx, ("text", "html"))
    if part is None:
        return None
    return _text_condition(node, path, ctx, key=f"body:{part}", extract=_body_view(part))


@CONDITIONS.register(
    "attachment", summary='Attachment file names ("name") or types ("type").', keys=_TEXT_KEYS
)
def attachment_condition(
    node: Mapping[str, Any], path: str, ctx: BuildContext
) -> CompiledCondition | None:
    """Compile ``{ attachment = "name", <operator> = ... }``."""
    part = _choice(node, "attachment", path, ctx, ("name", "type"))
    if part is None:
        return None
    return _text_condition(
        node, path, ctx, key=f"attachment:{part}", extract=_attachment_view(part)
    )


# ---------------------------------------------------------------- other leaf conditions


def _is_real_attachment(facts: LetterFacts) -> bool:
    return any(
        not (item.disposition == "inline" and item.content_id) for item in facts.letter.attachments
    )


@CONDITIONS.register("has_attachment", summary="true: the letter has an attachment.")
def has_attachment_condition(
    node: Mapping[str, Any], path: str, ctx: BuildContext
) -> CompiledCondition | None:
    """Compile ``{ has_attachment = true }`` (inline images embedded in HTML do not count)."""
    wanted = node["has_attachment"]
    if not isinstance(wanted, bool):
        ctx.problem(f"{path}.has_attachment", "must be true or false")
        return None
    miss = describe(node, path)

    def has_attachment(facts: LetterFacts) -> str | None:
        attachments = facts.letter.attachments
        found = bool(attachments) and _is_real_attachment(facts)
        return None if found is wanted else miss

    return has_attachment


def _size(name: str, *, over: bool) -> None:
    def factory(node: Mapping[str, Any], path: str, ctx: BuildContext) -> CompiledCondition | None:
        limit = node[name]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            ctx.problem(f"{path}.{name}", f"must be a whole number of bytes, not {render(limit)}")
            return None
        miss = describe(node, path)
        if over:

            def size_over(facts: LetterFacts) -> str | None:
                return None if facts.size > limit else miss

            return size_over

        def size_under(facts: LetterFacts) -> str | None:
            return None if facts.size < limit else miss

        return size_under

    factory.__doc__ = f"Compile ``{{ {name} = BYTES }}``."
    word = "larger" if over else "smaller"
    CONDITIONS.register(name, summary=f"The letter is {word} than this many bytes.")(factory)


_size("size_over", over=True)
_size("size_under", over=False)


def _names(node: Mapping[str, Any], name: str, path: str, ctx: BuildContext) -> list[str] | None:
    value = node[name]
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) and item.strip() for item in items):
        ctx.problem(
            f"{path}.{name}", f"must be a name or a non-empty list of names, not {render(value)}"
        )
        return None
    return [item.strip() for item in items]


@CONDITIONS.register("account", summary="The letter is in one of these accounts (by name).")
def account_condition(
    node: Mapping[str, Any], path: str, ctx: BuildContext
) -> CompiledCondition | None:
    """Compile ``{ account = "sales" }`` or a list of account names."""
    names = _names(node, "account", path, ctx)
    if names is None:
        return None
    ok = True
    for index, name in enumerate(names):
        if name not in ctx.accounts:
            where = f"{path}.account" + (f"[{index}]" if isinstance(node["account"], list) else "")
            known = ", ".join(sorted(ctx.accounts)) or "none configured"
            ctx.problem(where, f'unknown account "{name}" (accounts: {known})')
            ok = False
    if not ok:
        return None
    wanted = frozenset(names)
    miss = describe(node, path)

    def account(facts: LetterFacts) -> str | None:
        return None if facts.account in wanted else miss

    return account


@CONDITIONS.register("folder", summary="The letter was found in one of these watched folders.")
def folder_condition(
    node: Mapping[str, Any], path: str, ctx: BuildContext
) -> CompiledCondition | None:
    """Compile ``{ folder = "INBOX" }`` or a list of folder names."""
    names = _names(node, "folder", path, ctx)
    if names is None:
        return None
    watched = ctx.watched_folders()
    ok = True
    for index, name in enumerate(names):
        if name not in watched:
            where = f"{path}.folder" + (f"[{index}]" if isinstance(node["folder"], list) else "")
            ctx.problem(where, unwatched_folder(name, ctx))
            ok = False
    if not ok:
        return None
    wanted = frozenset(names)
    miss = describe(node, path)

    def folder(facts: LetterFacts) -> str | None:
        return None if facts.folder in wanted else miss

    return folder


def unwatched_folder(name: str, ctx: BuildContext) -> str:
    """Explain that a folder is not watched by the rule's accounts, listing what they watch."""
    accounts = [account for account in ctx.rule_accounts if account in ctx.accounts]
    watched = ", ".join(sorted(ctx.watched_folders())) or "none"
    return (
        f'folder "{name}" is not watched by account {", ".join(accounts) or "(none)"} '
        f"(watched: {watched})"
    )


# ---------------------------------------------------------------- combinations


def _children(
    node: Mapping[str, Any], name: str, path: str, ctx: BuildContext
) -> list[CompiledCondition] | None:
    items = node[name]
    if not isinstance(items, list) or not items:
        ctx.problem(f"{path}.{name}", "must be a non-empty list of condition tables")
        return None
    compiled = [ctx.condition(item, f"{path}.{name}[{index}]") for index, item in enumerate(items)]
    if any(child is None for child in compiled):
        return None
    return [child for child in compiled if child is not None]


@CONDITIONS.register("all", summary="Every condition in the list holds.")
def all_condition(
    node: Mapping[str, Any], path: str, ctx: BuildContext
) -> CompiledCondition | None:
    """Compile ``{ all = [ ... ] }``: a miss names the first condition that failed."""
    children = _children(node, "all", path, ctx)
    if children is None:
        return None
    if len(children) == 1:
        return children[0]
    group = tuple(children)

    def all_(facts: LetterFacts) -> str | None:
        for child in group:
            failed = child(facts)
            if failed is not None:
                return failed
        return None

    return ctx.gate(all_, gate_all([ctx.gate_of(child) for child in group]))


@CONDITIONS.register("any", summary="At least one condition in the list holds.")
def any_condition(
    node: Mapping[str, Any], path: str, ctx: BuildContext
) -> CompiledCondition | None:
    """Compile ``{ any = [ ... ] }``: a miss names the ``any`` itself."""
    children = _children(node, "any", path, ctx)
    if children is None:
        return None
    group = tuple(children)
    miss = f"{path}.any: none of {len(group)} conditions held"

    def any_(facts: LetterFacts) -> str | None:
        for child in group:
            if child(facts) is None:
                return None
        return miss

    return ctx.gate(any_, gate_any([ctx.gate_of(child) for child in group], miss))


@CONDITIONS.register("not", summary="The condition in the table does not hold.")
def not_condition(
    node: Mapping[str, Any], path: str, ctx: BuildContext
) -> CompiledCondition | None:
    """Compile ``{ not = { ... } }``: a miss names the ``not``."""
    child = ctx.condition(node["not"], f"{path}.not")
    if child is None:
        return None
    miss = f"{path}.not: the inner condition held"

    def not_(facts: LetterFacts) -> str | None:
        return miss if child(facts) is None else None

    return not_
