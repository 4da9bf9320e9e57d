"""structlog, configured once at start: JSON lines when stderr is not a tty, console when it is.

``run_id``, ``asset`` and ``validator`` are bound per run through contextvars. Records of other
libraries' stdlib loggers (warnings and up) are rendered by the same chain, so the stream stays one
format. Every secret value drwatch has read (see :mod:`drwatch.core.secrets`) is redacted: from each value
before rendering (strings, containers, and the text of any other object, tracebacks included), and again
from the rendered line.

Under systemd (stderr is the stream ``$JOURNAL_STREAM`` names), each line starts with a kernel-style
``<N>`` priority prefix, which journald strips and stores as the line's priority (``SyslogLevelPrefix=``,
on by default): ``journalctl -u drwatch -p warning`` shows the warning and error lines.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

# structlog imports these at import time whenever they are installed, only to offer them to its console
# renderer: rich (with pygments) for tracebacks, colorama for colours on Windows, better_exceptions. Here
# rich comes with pgqueuer's CLI (typer): together ~70 ms of CPU at every start of drwatch
# (benchmarks/startup_bench.py). drwatch's console renderer uses plain tracebacks and ANSI colours (the
# codes colorama defines) whether or not they are installed, so structlog is imported without them; a
# package that imports them later gets them as usual. drwatch.cli imports this module before anything else
# (a module that imported structlog first would load them).
_UNUSED = [name for name in ("rich", "colorama", "better_exceptions") if name not in sys.modules]
sys.modules.update(dict.fromkeys(_UNUSED))  # type: ignore[arg-type]  # None: `import name` raises ImportError
try:
    import structlog
finally:
    for _name in _UNUSED:
        if sys.modules.get(_name, 0) is None:
            del sys.modules[_name]

from drwatch.core import secrets  # noqa: E402
from drwatch.core.textsafe import escape  # noqa: E402

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_PLAIN = (int, float, bool, type(None))
# syslog priorities (RFC 5424) of structlog's level names, for journald's ``<N>`` line prefix.
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2}


def printable(text: str, limit: int = 200) -> str:
    """``text`` from outside (a file name) for one log field: steering characters escaped
    (:func:`drwatch.core.textsafe.escape`: a crafted name cannot start a forged line), cut at ``limit``
    characters (``...`` marks the cut)."""
    return escape(text[:limit]) + ("..." if len(text) > limit else "")


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return secrets.redact(value)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    if isinstance(value, set | frozenset):
        return [_redact(v) for v in value]
    # Anything else is rendered through repr()/str(): redact that text if it holds a secret.
    for text in (repr(value), str(value)):
        redacted = secrets.redact(text)
        if redacted != text:
            return redacted
    return value


def _exception_text(exc_info: Any) -> str | None:
    rendered = structlog.processors.format_exc_info(None, "", {"exc_info": exc_info})
    text = rendered.get("exception")
    return text if isinstance(text, str) else None


def redact_secrets(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not secrets.registered():
        return event_dict
    out = {k: _redact(v) for k, v in event_dict.items() if k not in ("exc_info", "_record", "_from_structlog")}
    for key in ("_record", "_from_structlog"):  # stdlib bridge bookkeeping, not rendered
        if key in event_dict:
            out[key] = event_dict[key]
    exc_info = event_dict.get("exc_info")
    if exc_info:
        text = _exception_text(exc_info)
        if text is not None and secrets.redact(text) != text:
            out["exception"] = secrets.redact(text)  # the renderer would print the secret from the traceback
        else:
            out["exc_info"] = exc_info
    return out


def redact_rendered(_logger: Any, _name: str, rendered: Any) -> Any:
    """Last step after the renderer: no secret survives in the final line."""
    return secrets.redact(rendered) if isinstance(rendered, str) and secrets.registered() else rendered


def to_journal(stream: Any) -> bool:
    """Whether ``stream`` is connected to the systemd journal: systemd sets ``JOURNAL_STREAM=DEV:INODE`` to
    the stream it connected stdout/stderr to (systemd.exec(5)); a redirected stderr no longer matches."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = expected.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


class _JournalPrefix:
    """Wraps the renderer: each rendered line starts with ``<N>``, N its level's syslog priority."""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> Any:
        level = str(event_dict.get("level", name)).lower()
        rendered = self._renderer(logger, name, event_dict)
        return f"<{_PRIORITY.get(level, 6)}>{rendered}" if isinstance(rendered, str) else rendered


def escape_values(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Console lines only (JSON escapes by itself): a string field from outside (a file name) cannot steer the
    terminal or start a forged line (:func:`drwatch.core.textsafe.escape`). Strings inside containers are printed
    through ``repr``, which escapes them already; a formatted traceback keeps its lines."""
    return {k: escape(v) if isinstance(v, str) and k != "exception" else v for k, v in event_dict.items()}


class _DrwatchHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler drwatch put on the root logger (replaced when configure() runs again)."""


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    tail: list[Any]
    renderer: Any = (structlog.processors.JSONRenderer() if use_json
                     else structlog.dev.ConsoleRenderer(colors=stream.isatty(),
                                                        exception_formatter=structlog.dev.plain_traceback))
    if to_journal(stream):
        renderer = _JournalPrefix(renderer)
    if use_json:
        tail = [structlog.processors.format_exc_info, redact_secrets, renderer, redact_rendered]
    else:
        tail = [redact_secrets, escape_values, renderer, redact_rendered]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, timestamper,
                    *tail],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )

    # Other libraries (aiohttp, apscheduler, asyncpg) log through stdlib logging: same format, same
    # redaction, warnings and up (their info lines are noise for an operator).
    handler = _DrwatchHandler(stream)
    handler.setLevel(max(_LEVELS[level], logging.WARNING))
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.contextvars.merge_contextvars, structlog.stdlib.add_logger_name,
                           structlog.stdlib.add_log_level, timestamper],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _DrwatchHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
