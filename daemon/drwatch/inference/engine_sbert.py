"""Engine ``sentence_transformers``: embeddings on CPU, compared with the golden embeddings by cosine."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from drwatch.inference.score import Score

DEFAULT_INPUTS = (
    "The backup must restore before anyone needs it.",
    "A quick brown fox jumps over the lazy dog.",
    "Wie viele Kopien braucht ein verlässliches Backup?",
    "SELECT count(*) FROM orders WHERE created_at > now() - interval '1 day';",
    "🙂 emoji, punctuation… and numbers 3-2-1-1-0",
)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; -1.0 (as far as it gets) for different lengths, zero or non-finite vectors."""
    if len(a) != len(b) or not a:
        return -1.0
    dot = na = nb = 0.0
    for x, y in zip(a, b, strict=True):
        dot += x * y
        na += x * x
        nb += y * y
    if not (math.isfinite(dot) and math.isfinite(na) and math.isfinite(nb)) or na == 0.0 or nb == 0.0:
        return -1.0
    return max(-1.0, min(1.0, dot / math.sqrt(na * nb)))


def compare_embeddings(golden: Sequence[Any], produced: Sequence[Any]) -> list[Score]:
    """Cosine of each produced embedding with its golden (pure)."""
    if len(golden) != len(produced):
        return [Score(-1.0, f"{len(produced)} embeddings for {len(golden)} golden inputs")]
    out = []
    for g, p in zip(golden, produced, strict=True):
        if not isinstance(p, list) or not all(isinstance(x, int | float) for x in p):
            out.append(Score(-1.0, "output is not a vector of numbers"))
            continue
        sim = cosine([float(x) for x in g], [float(x) for x in p])
        detail = ""
        if len(g) != len(p):
            detail = f"dimension {len(p)} != golden {len(g)}"
        elif not all(math.isfinite(float(x)) for x in p):
            detail = "embedding holds non-finite values (NaN/inf)"
        out.append(Score(sim, detail))
    return out


class SentenceTransformersEngine:
    name: ClassVar[str] = "sentence_transformers"
    package: ClassVar[str] = "sentence_transformers"
    default_inputs: ClassVar[tuple[str, ...]] = DEFAULT_INPUTS

    def load(self, model_dir: str, options: Mapping[str, Any]) -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(model_dir, device="cpu", local_files_only=True, trust_remote_code=False)

    def generate(self, model: Any, inputs: Sequence[str], options: Mapping[str, Any]) -> list[Any]:
        vectors = model.encode(list(inputs), batch_size=16, convert_to_numpy=True, normalize_embeddings=False,
                               show_progress_bar=False)
        return [[float(x) for x in row] for row in vectors.tolist()]

    def versions(self) -> dict[str, str]:
        import sentence_transformers
        import torch
        import transformers

        return {"sentence_transformers": sentence_transformers.__version__, "torch": str(torch.__version__),
                "transformers": transformers.__version__}

    def compare(self, golden: Sequence[Any], produced: Sequence[Any], options: Mapping[str, Any]) -> list[Score]:
        return compare_embeddings(golden, produced)
