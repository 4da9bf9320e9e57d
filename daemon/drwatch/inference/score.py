"""How close one produced output is to its golden (the engines' ``compare`` returns one per output)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    """How close one output is to its golden: 1.0 identical, lower is worse (cosine for embeddings)."""

    similarity: float
    detail: str = ""
