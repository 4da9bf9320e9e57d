"""``drwatch golden record``: record goldens from a known-good copy of a sealed model.

The copy is restored into a sandbox exactly as the ``model_weights`` validator restores it (copied while
hashed against the seal); any file missing, different or structurally bad refuses the recording (goldens
from a bad copy would make a bad backup pass later). Then the same worker the validator uses runs the
inputs — ``inference.inputs`` from the config, else those of the existing goldens file, else the engine's
defaults — and the goldens file is written atomically with the seal digest of the model.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import structlog

from drwatch.core.errors import DrillFailed, ValidatorError
from drwatch.core.sandbox import SandboxManager
from drwatch.formats.seals import seal_digest
from drwatch.inference import engines, goldens
from drwatch.inference.launch import run_worker
from drwatch.storage.filesystem import HashPool
from drwatch.storage.s3 import S3Pool
from drwatch.validators.base import ConfigView, RunContext
from drwatch.validators.model.config import ModelWeightsConfig
from drwatch.validators.model.files import CopyCheck
from drwatch.validators.model.weights import ModelWeightsValidator


def _pick(cfg: ConfigView, asset_name: str, validator: str | None) -> ModelWeightsConfig:
    asset = cfg.assets.get(asset_name)
    if asset is None:
        raise ValueError(f"unknown asset {asset_name!r} (assets: {sorted(cfg.assets)})")
    found = [v for v in asset.validators if isinstance(v, ModelWeightsConfig) and v.inference is not None
             and (validator is None or v.label == validator)]
    if len(found) != 1:
        what = f"named {validator!r} " if validator else ""
        raise ValueError(f"asset {asset_name!r} has {len(found)} model_weights validators {what}with "
                         "'inference'" + ("; choose one with --validator" if found else ""))
    return found[0]


async def record_goldens(cfg: ConfigView, asset_name: str, copy: str | None = None,
                         validator: str | None = None) -> tuple[Path, goldens.Goldens]:
    """Restore ``copy`` (default: the validator's inference copy), run the model, write the goldens file.

    Raises ValueError (selection), DrillFailed (the copy is not known-good) or ValidatorError (could not)."""
    vcfg = _pick(cfg, asset_name, validator)
    inf = vcfg.inference
    assert inf is not None
    asset = cfg.assets[asset_name]
    name = copy or vcfg.inference_copy(asset)
    refs = {"production": asset.production, **{c.label: c for c in asset.copies}}
    if name not in refs:
        raise ValueError(f"asset {asset_name!r} has no copy {name!r} (copies: {sorted(refs)})")
    run_id = f"golden-{uuid.uuid4().hex[:12]}"
    sandboxes = SandboxManager(cfg.resolve_path(cfg.limits.sandbox_dir) if cfg.limits.sandbox_dir else None)
    hashes = HashPool(cfg.limits.hash_workers)
    s3 = S3Pool(cfg.base_dir)
    validator_obj = ModelWeightsValidator(vcfg)
    async with AsyncExitStack() as stack:
        stack.callback(hashes.close)
        stack.push_async_callback(s3.close)
        ctx = RunContext(run_id=run_id, asset_name=asset_name, asset=asset, config=cfg,
                         log=structlog.get_logger("drwatch.golden"),
                         deadline=asyncio.get_running_loop().time() + inf.timeout.total_seconds() + 3600,
                         exit_stack=stack, hashes=hashes, sandboxes=sandboxes, s3=s3)
        sealed_at, entries, manifest = await validator_obj.read_seal(ctx)
        ref = refs[name]
        src = validator_obj.source(ctx, name, "production" if name == "production" else "copy", ref.location,
                                    ref.prefix)
        c = CopyCheck(src, limit=vcfg.list_limit)
        sandbox = await stack.enter_async_context(sandboxes.directory(run_id))
        model_dir = sandbox / "model"
        await validator_obj.check_copy(ctx, c, {e.key: e for e in entries}, model_dir)
        if c.state is not None or c.broken or c.errors:
            raise ValidatorError("copy_unreadable", f"copy {name!r} could not be read: "
                                 + "; ".join(f.message for f in c.findings[:3]))
        if c.counts["verified"] != len(entries) or c.failed():
            raise DrillFailed("copy_not_known_good", f"copy {name!r} does not match the seal "
                              f"({c.counts['missing']} missing, {c.counts['mismatch']} different, "
                              f"{c.counts['corrupt']} corrupt): " + "; ".join(f.message for f in c.findings[:3]))
        path = cfg.resolve_path(inf.goldens)
        inputs: list[str] | None = list(inf.inputs) if inf.inputs else None
        if inputs is None:
            try:
                inputs = list((await asyncio.to_thread(goldens.load, path)).inputs)
            except goldens.GoldensError:
                inputs = list(engines()[inf.engine].default_inputs)
        result = await run_worker(engine=inf.engine, model_dir=model_dir, inputs=inputs, options=inf.options(),
                                  workdir=sandbox / "worker", limit=inf.timeout.total_seconds(),
                                  memory_limit=inf.effective_memory_limit(), threads=inf.threads, python=inf.python)
        if not result.ok:
            raise ValidatorError(f"inference_{result.code}", result.message)
        _, digest = await seal_digest(manifest)
        gold = goldens.Goldens(engine=inf.engine, seal_digest=digest, inputs=tuple(inputs),
                               outputs=tuple(result.outputs), recorded_at=time.time(),
                               recorded_from=f"{asset_name}/{name}", versions=result.versions,
                               options={**inf.options(), "sealed_at": sealed_at})
        await asyncio.to_thread(goldens.save, path, gold)
        return path, gold
