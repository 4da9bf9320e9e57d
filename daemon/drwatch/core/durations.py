"""Human durations (``30s``, ``15m``, ``24h``, ``7d``) as used throughout the configuration."""

from __future__ import annotations

import math
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
    if cleaned.startswith("-"):
        raise ValueError(f"a duration cannot be negative, got {text!r}")
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
    """Render seconds for people (messages, tables): largest units, rounded to the second above 1s."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    remaining = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size:
            count, remaining = divmod(remaining, size)
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def serialize_duration(value: timedelta) -> str:
    """Render a duration the way it is written in configs, exactly: parses back to the same value."""
    micros = value // timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    parts = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000)):
        if micros >= size:
            count, micros = divmod(micros, size)
            parts.append(f"{count}{unit}")
    if micros:
        millis, rest = divmod(micros, 1000)
        parts.append(f"{millis}.{rest:03d}".rstrip("0") + "ms" if rest else f"{millis}ms")
    return sign + ("".join(parts) or "0s")


_MAX_SECONDS = timedelta.max.total_seconds()


def _coerce(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("a duration must be text like 30s, 15m, 24h, 7d")
    if isinstance(value, str):
        seconds = parse_duration(value)
    else:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a duration must be a finite number of seconds")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    try:
        if seconds > _MAX_SECONDS:
            raise OverflowError
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("duration too long (the maximum is 999999999d)") from None


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(serialize_duration, return_type=str),
]
