"""Human durations (``30s``, ``15m``, ``24h``, ``7d``) as used throughout the configuration."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Parse ``1h30m``-style text into seconds. Raises ValueError with the offending text."""
    cleaned = text.strip().replace(" ", "")
    if not cleaned:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(cleaned):
        raise ValueError(f"invalid duration {text!r}: expected e.g. 30s, 15m, 24h, 7d, 1h30m")
    return total


def format_duration(seconds: float) -> str:
    """Render seconds the way they are written in configs (largest exact units)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    remaining = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size:
            count, remaining = divmod(remaining, size)
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _coerce(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration must be text like 30s, 15m, 24h, 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        return timedelta(seconds=parse_duration(value))
    raise ValueError("a duration must be text like 30s, 15m, 24h, 7d")


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(lambda td: format_duration(td.total_seconds()), return_type=str),
]
