"""``python -m drwatch.inference.worker --request FILE --out FILE``: load a model, run its inputs,
write JSON.

The request (JSON): ``{"engine", "model_dir", "inputs": [...], "options": {...}, "memory_limit": bytes|null}``.
The memory limit is applied to this process (``RLIMIT_AS``) before any engine package is imported. The
result (JSON, written atomically to ``--out``): ``{"ok": true, "outputs", "versions", "load_seconds",
"run_seconds", "max_rss_bytes"}`` or ``{"ok": false, "code", "message", "phase"}`` with ``code`` one of

- ``engine_missing``: the engine's package (or one it needs) cannot be imported — could not check;
- ``memory``: the memory limit was hit — could not check (raise ``memory_limit``);
- ``load_failed`` / ``run_failed``: the model did not load, or failed on the inputs.

Exit status 0 whenever a result was written; anything else (a crash, a kill) leaves no result.
Only the standard library is imported here, so a core install reports a missing engine cleanly.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from drwatch.inference import engines


def _memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    text = str(exc).lower()
    # Under RLIMIT_AS the dynamic loader cannot map a large library: an ImportError that is about memory.
    return isinstance(exc, RuntimeError | ImportError | OSError) and any(
        s in text for s in ("can't allocate memory", "cannot allocate memory", "out of memory",
                            "failed to map segment"))


def _failure(exc: BaseException, phase: str) -> dict[str, Any]:
    if _memory_error(exc):
        code = "memory"
    elif isinstance(exc, ImportError):
        code = "engine_missing"
    else:
        code = f"{phase}_failed"
    message = f"{type(exc).__name__}: {exc}"
    return {"ok": False, "code": code, "phase": phase, "message": message[:2000]}


def serve(request: dict[str, Any]) -> dict[str, Any]:
    limit = request.get("memory_limit")
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    engine = engines().get(str(request.get("engine")))
    if engine is None:
        return {"ok": False, "code": "engine_missing", "phase": "load",
                "message": f"unknown engine {request.get('engine')!r}"}
    options = dict(request.get("options") or {})
    started = time.monotonic()
    try:
        model = engine.load(str(request["model_dir"]), options)
        versions = engine.versions()
    except Exception as exc:
        return _failure(exc, "load")
    loaded = time.monotonic()
    try:
        outputs = engine.generate(model, [str(i) for i in request["inputs"]], options)
    except Exception as exc:
        return _failure(exc, "run")
    return {"ok": True, "outputs": outputs, "versions": versions, "load_seconds": loaded - started,
            "run_seconds": time.monotonic() - loaded,
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drwatch.inference.worker")
    parser.add_argument("--request", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    request = json.loads(Path(args.request).read_text(encoding="utf-8"))
    try:
        result = serve(request)
    except MemoryError as exc:
        result = _failure(exc, "load")
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
