"""Parent side of an inference run: start the worker in its own process group, bounded in time and memory.

The worker gets a minimal environment (no credentials of the daemon leak into it): ``PATH``, ``HOME``,
the offline switches ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``, caches inside the run's work
directory, ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` from ``threads``, and ``MALLOC_ARENA_MAX=2`` (glibc
reserves address space per malloc arena and thread; under ``RLIMIT_AS`` that reservation, not real memory,
would otherwise decide when loading fails). On timeout or cancellation the whole process group is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import drwatch
from drwatch.core.errors import ValidatorError
from drwatch.core.subprocesses import run_tool

_PASS_THROUGH = ("LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES")


@dataclass(frozen=True)
class WorkerResult:
    ok: bool
    code: str = ""  # on failure: engine_missing, memory, load_failed, run_failed, timeout, crashed
    message: str = ""
    outputs: list[Any] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the worker process
    load_seconds: float = 0.0
    max_rss_bytes: int = 0


def worker_env(workdir: Path, threads: int | None) -> dict[str, str]:
    source_root = str(Path(drwatch.__file__).resolve().parent.parent)
    extra_path = os.environ.get("PYTHONPATH", "")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(workdir)),
        "PYTHONPATH": source_root + (os.pathsep + extra_path if extra_path else ""),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(workdir / "hf"),
        "XDG_CACHE_HOME": str(workdir / "cache"),
        "TORCH_HOME": str(workdir / "torch"),
        "TOKENIZERS_PARALLELISM": "false",
        "MALLOC_ARENA_MAX": "2",
    }
    env.update({k: os.environ[k] for k in _PASS_THROUGH if k in os.environ})
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


async def run_worker(*, engine: str, model_dir: Path, inputs: Sequence[str], options: Mapping[str, Any],
                     workdir: Path, limit: float, memory_limit: int | None = None, threads: int | None = None,
                     python: str | None = None) -> WorkerResult:
    """Run the worker once. Failures of the worker are results (``ok`` False), never exceptions; ``limit``
    seconds kill the process group and returns ``code='timeout'``. Cancellation kills it and re-raises."""
    request = workdir / "request.json"
    out = workdir / "result.json"
    body = json.dumps({"engine": engine, "model_dir": str(model_dir), "inputs": list(inputs),
                       "options": dict(options), "memory_limit": memory_limit})

    def prepare() -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        request.write_text(body, encoding="utf-8")

    await asyncio.to_thread(prepare)
    worker = "drwatch.inference.worker"
    argv = [python or sys.executable, "-m", worker, "--request", str(request), "--out", str(out)]
    started = time.monotonic()
    try:
        tool = await run_tool(argv, env=worker_env(workdir, threads), limit=max(1.0, limit), keep_stdout=False,
                              cwd=workdir)
    except ValidatorError as exc:
        if exc.code == "tool_timeout":
            return WorkerResult(False, "timeout", f"the inference worker did not finish within {limit:.0f}s "
                                                  "(killed)", seconds=time.monotonic() - started)
        return WorkerResult(False, "engine_missing", f"cannot start the worker: {exc.message}")
    seconds = time.monotonic() - started
    try:
        doc = json.loads(await asyncio.to_thread(out.read_text, encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        tail = tool.stderr.strip().splitlines()[-3:]
        how = f"killed by signal {-tool.returncode}" if tool.returncode < 0 else f"exit status {tool.returncode}"
        return WorkerResult(False, "crashed", f"the inference worker ended without a result ({how}): "
                                              + " | ".join(tail)[:1000], seconds=seconds)
    if not doc.get("ok"):
        return WorkerResult(False, str(doc.get("code", "crashed")), str(doc.get("message", "")), seconds=seconds)
    return WorkerResult(True, outputs=list(doc.get("outputs") or []),
                        versions={str(k): str(v) for k, v in dict(doc.get("versions") or {}).items()},
                        seconds=seconds, load_seconds=float(doc.get("load_seconds", 0.0)),
                        max_rss_bytes=int(doc.get("max_rss_bytes", 0)))
