"""Inference smoke tests of a restored model: engines behind one small protocol, run in a subprocess.

The parent process (the ``model_weights`` validator, ``drwatch golden record``) never imports an engine's
packages (torch, sentence-transformers, vLLM): it starts ``python -m drwatch.inference.worker`` (see
:mod:`drwatch.inference.launch`) with a time and memory limit, and compares what the worker returns with the
recorded goldens (:mod:`drwatch.inference.goldens`) using the engine's pure ``compare``.

An engine has two halves:

- ``load`` / ``generate`` run in the worker and import the engine's packages there, lazily;
- ``compare`` runs in the parent, is pure Python and scores each output against its golden (1.0 = same).

Engines are listed explicitly in :func:`engines` (no import strings, no registration by import).
This package imports only the standard library (and sits outside ``drwatch.validators``, whose ``__init__`` loads
every plugin), so the worker starts in a core install or a bare interpreter too and reports a missing engine
package as ``engine_missing``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from drwatch.inference.score import Score

__all__ = ["Engine", "Score", "engines"]


class Engine(Protocol):
    name: ClassVar[str]
    package: ClassVar[str]  # the import the worker needs (its absence is `engine_missing`, an error)
    default_inputs: ClassVar[tuple[str, ...]]

    def load(self, model_dir: str, options: Mapping[str, Any]) -> Any:
        """Load the model from a local directory (worker only; imports the engine's packages)."""
        ...

    def generate(self, model: Any, inputs: Sequence[str], options: Mapping[str, Any]) -> list[Any]:
        """One JSON-serialisable output per input (worker only)."""
        ...

    def versions(self) -> dict[str, str]:
        """Versions of the packages that produced the outputs (worker only, after load)."""
        ...

    def compare(self, golden: Sequence[Any], produced: Sequence[Any], options: Mapping[str, Any]) -> list[Score]:
        """Score each produced output against its golden (parent; pure)."""
        ...


def engines() -> dict[str, Engine]:
    """Every engine by name. Importing the engine modules is cheap: their heavy imports are inside ``load``."""
    from drwatch.inference.engine_sbert import SentenceTransformersEngine
    from drwatch.inference.engine_vllm import VllmEngine

    return {SentenceTransformersEngine.name: SentenceTransformersEngine(), VllmEngine.name: VllmEngine()}

