"""The goldens file: inputs and the outputs a known-good copy of the model produced for them.

```
{"drwatch_goldens": 1, "engine": "sentence_transformers", "seal_digest": "sha256:...",
 "recorded_at": 1764201600.0, "recorded_from": "weights/dr-disk", "versions": {"torch": "2.13.0", ...},
 "options": {...}, "inputs": ["text", ...], "outputs": [[0.01, ...], ...]}
```
``seal_digest`` names the exact model bytes the goldens were recorded from (see :mod:`drwatch.formats.seals`): when
the asset's seal changes (a new model version), outputs are expected to differ and the goldens must be
recorded again (``drwatch golden record``). Written atomically by ``drwatch golden record`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from drwatch.core.atomicfile import write_text_atomic

FORMAT_VERSION = 1


class GoldensError(Exception):
    """The goldens file is missing, unreadable or not a drwatch goldens file."""


@dataclass(frozen=True)
class Goldens:
    engine: str
    seal_digest: str
    inputs: tuple[str, ...]
    outputs: tuple[Any, ...]
    recorded_at: float
    recorded_from: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"drwatch_goldens": FORMAT_VERSION, "engine": self.engine, "seal_digest": self.seal_digest,
                "recorded_at": self.recorded_at, "recorded_from": self.recorded_from,
                "versions": dict(self.versions), "options": dict(self.options), "inputs": list(self.inputs),
                "outputs": list(self.outputs)}


def parse(text: str) -> Goldens:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GoldensError(f"not JSON ({exc.msg}, line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:  # digits past the limit, nesting past the stack
        raise GoldensError(f"not JSON a parser accepts ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or doc.get("drwatch_goldens") != FORMAT_VERSION:
        raise GoldensError(f"not a drwatch goldens file (version {FORMAT_VERSION} expected)")
    inputs, outputs = doc.get("inputs"), doc.get("outputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise GoldensError("'inputs' must be a non-empty list of texts")
    if not isinstance(outputs, list) or len(outputs) != len(inputs):
        raise GoldensError(f"'outputs' must hold one output per input ({len(inputs)})")
    try:
        return Goldens(engine=str(doc["engine"]), seal_digest=str(doc["seal_digest"]), inputs=tuple(inputs),
                       outputs=tuple(outputs), recorded_at=float(doc["recorded_at"]),
                       recorded_from=str(doc.get("recorded_from", "")),
                       versions={str(k): str(v) for k, v in dict(doc.get("versions") or {}).items()},
                       options=dict(doc.get("options") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise GoldensError(f"missing or malformed field ({type(exc).__name__}: {exc})") from None


def load(path: Path) -> Goldens:
    """Read a goldens file (blocking; small). Raises GoldensError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GoldensError(f"{path} does not exist (record it with `drwatch golden record`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldensError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse(text)


def save(path: Path, goldens: Goldens) -> None:
    """Write atomically (temporary file in the same directory, fsync, rename). Blocking."""
    def write(fh: IO[str]) -> None:
        json.dump(goldens.to_dict(), fh, indent=1)
        fh.write("\n")

    write_text_atomic(path, write)
