"""Optional extras: which Python modules a configured feature imports, and the pip extra that installs them.

One table for both sides: a validator declares what it needs (``ValidatorConfigBase.needs``), the run reports
the absence with the code given here (``pyarrow_missing``, ``extra_missing``...), and ``check-config`` looks
the modules up with :func:`importlib.util.find_spec` (located, never imported: no heavy import, no side
effect) and warns before the first run does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path


@dataclass(frozen=True)
class Extra:
    """A pip extra of drwatch and the top-level modules it provides."""

    name: str
    modules: tuple[str, ...]

    @property
    def install(self) -> str:
        """How to add the extra to the environment drwatch runs in (its own pip, from a drwatch checkout: a bare
        `pip` is refused on Debian's externally managed Python, and drwatch is installed from its source)."""
        pip = Path(sys.prefix) / "bin" / "pip"
        return f"{pip} install '.[{self.name}]' (in the drwatch checkout)"

    def missing(self) -> tuple[str, ...]:
        """The modules of this extra that this interpreter cannot locate (blocking: a few stat calls)."""
        return tuple(m for m in self.modules if not _locatable(m))


def _locatable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package, or a module with __spec__ = None
        return False


PARQUET = Extra("ml", ("pyarrow",))  # Parquet footers (dataset validator, seals)
NUMPY = Extra("ml", ("numpy",))  # .npy query vectors
PARQUET_VECTORS = Extra("ml", ("pyarrow", "numpy"))  # pgvector drills from a Parquet export
PINECONE_EXACT = Extra("pinecone", ("numpy",))  # exact top-k of a Pinecone drill
CLUSTER = Extra("cluster", ("pgqueuer",))  # cluster mode's job engine
REDIS = Extra("redis", ("redis",))  # redis_restore: redis-py's asyncio client (redis.asyncio)
# Inference engines (model_weights inference), by engine name: what the worker imports.
ENGINES = {"sentence_transformers": Extra("ml", ("sentence_transformers", "torch")), "vllm": Extra("vllm", ("vllm",))}


@dataclass(frozen=True)
class Need:
    """A configured feature's need: ``field`` is the path under the validator ("" for the validator itself),
    ``code`` what its run reports when the modules are absent, ``why`` what they are for."""

    field: str
    extra: Extra
    code: str
    why: str


def warning(where: str, what: str, need: Need) -> str | None:
    """The check-config warning for one need (None: everything is installed here)."""
    missing = need.extra.missing()
    if not missing:
        return None
    names = " and ".join(missing)
    return (f"{where}: {what} needs {names} ({need.why}), not installed for this Python: each run would end as "
            f"`error` ({need.code}); install the `{need.extra.name}` extra: {need.extra.install}")
