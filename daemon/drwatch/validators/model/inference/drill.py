"""The inference smoke test of a restored model: its configuration, the run and who is to blame.

Used by the ``model_weights`` validator once a copy has been restored into the sandbox (and by
``drwatch golden record`` for the configuration). The worker runs in a subprocess
(:mod:`drwatch.inference.launch`); this module only decides what its result means:

- the restored bytes differ from the seal and the model fails or drifts: ``failed`` (the backup is bad);
- the bytes equal the seal the goldens were recorded from, yet it fails or drifts: ``error`` (the serving
  stack changed, or the goldens belong to another seal);
- engine missing, memory limit, timeout, unreadable goldens: ``error``.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from drwatch.core.durations import Duration
from drwatch.core.model import Finding, Severity
from drwatch.formats.seals import seal_digest
from drwatch.inference import engines, goldens
from drwatch.inference.launch import WorkerResult, run_worker

if TYPE_CHECKING:  # validators/__init__ imports model_weights, which imports this module
    from drwatch.validators.base import RunContext

GiB = 1024**3
_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": GiB, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _bytes(value: Any) -> Any:
    """``4GiB``, ``512MiB``, ``2GB`` or a number of bytes; ``none`` passes through (no limit)."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return "none"
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"invalid size {value!r}: expected e.g. 4GiB, 512MiB, 2GB or 'none'")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


ByteSize = Annotated[int | Literal["none"], BeforeValidator(_bytes)]


class InferenceConfig(BaseModel):
    """Restore one backup copy into the sandbox and run the model on the golden inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    engine: Literal["sentence_transformers", "vllm"]
    copy_name: str | None = Field(default=None, alias="copy")  # default: the asset's first copy
    goldens: str  # the goldens file (relative to the config's directory), written by `drwatch golden record`
    min_similarity: float = Field(default=0.99, ge=-1.0, le=1.0)
    timeout: Duration = timedelta(minutes=5)
    memory_limit: ByteSize | None = None  # RLIMIT_AS of the worker; default 4GiB (sentence_transformers), none (vllm)
    threads: int | None = Field(default=2, ge=1, le=256)
    inputs: list[str] | None = Field(default=None, min_length=1)  # for `drwatch golden record`
    python: str | None = None  # interpreter that has the engine installed (default: drwatch's own)
    # vllm only
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    top_logprobs: int | None = Field(default=None, ge=1, le=20)
    logprob_tolerance: float | None = Field(default=None, gt=0)
    engine_args: dict[str, str | int | float | bool] | None = None

    @model_validator(mode="after")
    def _engine_fields(self) -> InferenceConfig:
        vllm_only = [k for k in ("max_tokens", "top_logprobs", "logprob_tolerance", "engine_args")
                     if getattr(self, k) is not None]
        if self.engine != "vllm" and vllm_only:
            raise ValueError(f"{', '.join(vllm_only)} only apply to engine 'vllm'")
        if isinstance(self.memory_limit, int) and self.memory_limit < 256 * 1024**2:
            raise ValueError("memory_limit below 256MiB cannot start an inference worker")
        return self

    def effective_memory_limit(self) -> int | None:
        if self.memory_limit == "none":
            return None
        if self.memory_limit is None:  # RLIMIT_AS and CUDA do not mix (huge virtual mappings): no default for vllm
            return 4 * GiB if self.engine == "sentence_transformers" else None
        return int(self.memory_limit)

    def options(self) -> dict[str, Any]:
        if self.engine != "vllm":
            return {}
        return {"max_tokens": self.max_tokens or 32, "top_logprobs": self.top_logprobs or 5,
                "logprob_tolerance": self.logprob_tolerance or 0.5, "engine_args": dict(self.engine_args or {})}


async def smoke_test(ctx: RunContext, inf: InferenceConfig, subject: str, blame_backup: bool, model_dir: Path,
                     manifest: Path, figures: dict[str, float], findings: list[Finding]) -> tuple[bool, bool]:
    """Run the restored model in ``model_dir`` on the goldens' inputs; returns (failed, error).
    ``blame_backup``: the restored bytes differ from the seal."""
    path = ctx.config.resolve_path(inf.goldens)
    try:
        gold = await asyncio.to_thread(goldens.load, path)
    except goldens.GoldensError as exc:
        findings.append(Finding(Severity.WARNING, "goldens_unreadable", str(exc), subject))
        return False, True
    if gold.engine != inf.engine:
        findings.append(Finding(Severity.WARNING, "goldens_unreadable", f"goldens were recorded with engine "
                                                                        f"{gold.engine!r}, not {inf.engine!r}",
                                subject))
        return False, True
    _, digest = await seal_digest(manifest)
    stale = gold.seal_digest != digest
    if stale:
        findings.append(Finding(Severity.WARNING, "goldens_stale",
                                "the goldens were recorded for another seal of the model: record them again "
                                "(drwatch golden record)", subject))
    figures["golden_similarity_threshold"] = inf.min_similarity
    result = await run_worker(engine=inf.engine, model_dir=model_dir, inputs=gold.inputs, options=inf.options(),
                              workdir=model_dir.parent / "worker",
                              limit=min(inf.timeout.total_seconds(), max(1.0, ctx.remaining() - 5)),
                              memory_limit=inf.effective_memory_limit(), threads=inf.threads, python=inf.python)
    figures["inference_seconds"] = result.seconds
    return judge(inf, gold, result, blame_backup, stale, figures, findings, subject)


def judge(inf: InferenceConfig, gold: goldens.Goldens, result: WorkerResult, blame_backup: bool, stale: bool,
          figures: dict[str, float], findings: list[Finding], subject: str) -> tuple[bool, bool]:
    """What a worker result means for the run: (failed, error), with the finding that says why."""
    if not result.ok:
        if result.code in ("engine_missing", "memory", "timeout"):
            hint = {"engine_missing": f"install drwatch[ml] (engine {inf.engine}) or set inference.python",
                    "memory": "raise inference.memory_limit", "timeout": "raise inference.timeout"}[result.code]
            findings.append(Finding(Severity.WARNING, f"inference_{result.code}",
                                    f"{result.message} ({hint})", subject))
            return False, True
        if blame_backup:
            findings.append(Finding(Severity.CRITICAL, "inference_failed",
                                    f"the restored model does not load or run: {result.message}", subject))
            return True, False
        findings.append(Finding(Severity.WARNING, "inference_error",
                                f"the restored files equal the seal, yet the model does not load or run here "
                                f"(the serving stack, not the backup): {result.message}", subject))
        return False, True
    scores = engines()[inf.engine].compare(gold.outputs, result.outputs, inf.options())
    worst = min(range(len(scores)), key=lambda i: scores[i].similarity)
    similarity = scores[worst].similarity
    figures["golden_similarity"] = similarity
    if similarity >= inf.min_similarity:
        return False, False
    detail = f"golden input {worst}: similarity {similarity:.4f} < {inf.min_similarity}" + (
        f" ({scores[worst].detail})" if scores[worst].detail else "")
    if blame_backup:
        findings.append(Finding(Severity.CRITICAL, "golden_mismatch", detail, subject))
        return True, False
    why = "the goldens belong to another seal" if stale else (
        "the restored files equal the seal the goldens were recorded from, so the serving stack changed "
        f"(now {result.versions}, recorded with {gold.versions})")
    findings.append(Finding(Severity.WARNING, "golden_drift", f"{detail}; {why}", subject))
    return False, True
