"""JSON decoding for the hot paths that read many stored documents (``drwatch report`` decodes the copies of
every result of a period): orjson where it is installed (a dependency; about 3x faster), else the json module.
Both give the same values for the JSON drwatch writes (orjson parses floats exactly, as json does)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _plain(text: str | bytes) -> Any:
    return json.loads(text)


def _pick() -> Callable[[str | bytes], Any]:
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency; kept working without it
        return _plain

    def fast(text: str | bytes) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:  # what orjson refuses (integers past 64 bits, NaN): json's reading
            return json.loads(text)

    return fast


loads: Callable[[str | bytes], Any] = _pick()
