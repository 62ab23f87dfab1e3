"""structlog set-up, done once by the CLI: JSON for log collectors, readable lines on a TTY."""

from __future__ import annotations

import contextlib
import json as jsonlib
import logging
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

SECRET_KEYS = frozenset({"password", "passwd", "secret", "token", "authorization", "raw"})
REDACTED = "***"


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask any value whose key names a secret, so a stray bind never leaks a password."""
    for key in event_dict:
        secret = _SECRET_BY_KEY.get(key)
        if secret is None:
            lowered = key.lower()
            secret = lowered in SECRET_KEYS or lowered.endswith(("_password", "_token"))
            if len(_SECRET_BY_KEY) < 4096:  # keys come from code, but stay bounded anyway
                _SECRET_BY_KEY[key] = secret
        if secret:
            event_dict[key] = REDACTED
    return event_dict


_SECRET_BY_KEY: dict[str, bool] = {}

#: One list for every configure() call: loggers cached under an earlier call then follow a
#: later one, and so does structlog's capture_logs, which edits the configured list in place.
_PROCESSORS: list[Any] = []


class _StderrLines:
    """Write maild's own rendered events straight to stderr, one line each.

    The stdlib route (a LogRecord, a handler and a formatter per event) cost about as much as
    the rest of storing a letter; maild's events need none of it. Other libraries' records
    still go through the stdlib handler with the same processors.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name

    def msg(self, line: str) -> None:
        """Write one rendered event; stderr is looked up each time, so a redirect is followed."""
        held = _held.get()
        if held is not None and held.open:
            held.lines.append(line)
            return
        _write_lines([line])

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _Held:
    """The lines one block holds; once it has ended, a task it started writes at once."""

    __slots__ = ("lines", "open")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.open = True


_held: ContextVar[_Held | None] = ContextVar("maild_held_log_lines", default=None)
_write_lock = threading.Lock()


def _write_lines(lines: list[str]) -> None:
    """Write rendered events to stderr, whole lines only."""
    with _write_lock:
        for line in lines:
            sys.stderr.write(line + "\n")


@contextlib.contextmanager
def held_until_done() -> Iterator[None]:
    """Hold maild's log lines written in this block (this task only) and write them if it ends well.

    A transaction that rolls back must not leave lines saying what it decided: the letters are
    decided again, and logged, by the attempt that commits. Lines of a block that raises are
    dropped; a block inside another hands its lines to the outer one.
    """
    outer = _held.get()
    held = _Held()
    token = _held.set(held)
    try:
        yield
    finally:
        held.open = False  # a task started in the block (its context copied) writes directly
        _held.reset(token)
    if outer is not None and outer.open:
        outer.lines.extend(held.lines)
    else:
        _write_lines(held.lines)


def _stderr_lines(*args: Any) -> _StderrLines:
    """Make the writer for one named logger (structlog passes get_logger's arguments)."""
    return _StderrLines(str(args[0]) if args else "")


def _fallback(value: Any) -> Any:
    """Render what JSON cannot hold as structlog does: ``__structlog__()`` if defined, else repr."""
    custom = getattr(value, "__structlog__", None)
    return custom() if callable(custom) else repr(value)


def _json_serializer() -> Any:
    """Build one reusable encoder: json.dumps with ``default`` makes a new encoder per event."""
    encoder = jsonlib.JSONEncoder(default=_fallback)

    def dumps(event_dict: Any, **_kw: Any) -> str:
        return encoder.encode(event_dict)

    return dumps


def configure(level: str = "INFO", *, json: bool | None = None) -> None:
    """Route structlog and stdlib logging through one set of processors; called only from the CLI."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    threshold = logging.getLevelName(level.upper())
    if not isinstance(threshold, int):
        raise ValueError(f"unknown log level {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_serializer())
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # maild's events: a level below the threshold is a bound no-op method, nothing is built.
    _PROCESSORS[:] = [*shared, structlog.processors.format_exc_info, renderer]
    structlog.configure(
        processors=_PROCESSORS,
        logger_factory=_stderr_lines,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    # aioimaplib logs whole letters and auth blobs at DEBUG: never let it below INFO.
    logging.getLogger("aioimaplib").setLevel(max(logging.INFO, root.level))
    for noisy in ("asyncio", "sqlalchemy.engine", "alembic", "weasyprint.progress"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> Any:
    """Give a structlog logger bound to a module name."""
    return structlog.get_logger(name)
