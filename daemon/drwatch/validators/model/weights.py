"""Validator ``model_weights``: every copy of a model holds the sealed files, intact and loadable.

The reference is the asset's seal (``drwatch seal``): without one nothing can be proven (``no_seal``, an
error; production is never taken as the reference, since a corrupt production model would then pass).
Per copy (production included unless ``production: false``):

1. the listing against the seal: ``missing`` and ``extra`` files;
2. the structure of every ``*.safetensors`` file from its header alone (8 + N bytes; S3: one or two ranged
   GETs, the size from the listing) and every ``*.safetensors.index.json`` against its shards
   (:mod:`drwatch.formats.safetensors`). A structurally bad file is ``corrupt`` and is not hashed: a
   truncated shard is found without reading it;
3. sha256 and size of every other file against the seal (threads, streamed): ``mismatch``;
4. S3 copies: Object Lock per object (HEAD), as the ``replica`` validator judges it.

With ``inference`` set, one backup copy is restored: its files are copied into the run's sandbox while
they are hashed (this is that copy's sha256 check, so it is read once), then the model runs in a worker
subprocess (:mod:`drwatch.inference.launch`) on the golden inputs and its outputs are compared with the
recorded goldens. A model whose restored bytes differ from the seal and that fails to load or scores below
``min_similarity`` is ``failed``; when the restored bytes equal the seal the goldens were recorded from, a
failure cannot be the backup's: it is an ``error`` (engine missing, memory limit, timeout, a changed
serving stack, or goldens recorded for another seal).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from drwatch.core.durations import format_duration
from drwatch.core.errors import ValidatorError
from drwatch.core.model import CopyReport, CopyState, Finding, Outcome, Report, Severity
from drwatch.formats.manifest import ManifestError, aread
from drwatch.formats.seals import seal_present
from drwatch.storage.filesystem import Entry
from drwatch.storage.sources import Facts, Source
from drwatch.validators.assetseal import asset_manifest_path, seal_trust
from drwatch.validators.base import RunContext
from drwatch.validators.copies.posture import (
    LockText,
    copy_facts,
    copy_report,
    copy_sources,
    dependencies,
    open_source,
    production_source,
)
from drwatch.validators.copies.timetrust import seal_in_future
from drwatch.validators.model import files
from drwatch.validators.model.config import ModelWeightsConfig
from drwatch.validators.model.files import CopyCheck
from drwatch.validators.model.inference.drill import InferenceConfig, smoke_test
from drwatch.validators.plugin import Family, Latest, Plugin, Sample

STATES = ("verified", "missing", "mismatch", "corrupt", "extra")
_LOCK_TEXT = LockText(
    unversioned="bucket versioning is {versioning}",
    unlocked="{n} file(s) of the model carry no Object Lock retention",
    governance="{n} file(s) are only GOVERNANCE-locked",
    expiring="a lock of the model expires in {left}",
)


def _figures(seal: dict[str, Entry], entries: list[Entry], copies: list[CopyCheck],
             hash_seconds: float) -> dict[str, float]:
    return {
        "files_reference": float(len(seal)), "bytes_reference": float(sum(e.size for e in entries)),
        "files_verified": float(sum(c.counts["verified"] for c in copies)),
        "bytes_hashed": float(sum(c.bytes_hashed for c in copies)), "hash_seconds": hash_seconds,
        "safetensors_checked": float(sum(c.structure_checked for c in copies)),
        **{f"files_{s}": float(sum(c.counts[s] for c in copies if c.src.role == "copy"))
           for s in ("missing", "mismatch", "corrupt", "extra")},
    }


class ModelWeightsValidator:
    kind: ClassVar[str] = "model_weights"

    def __init__(self, cfg: ModelWeightsConfig) -> None:
        self.cfg = cfg

    source = staticmethod(open_source)  # one location (``drwatch golden`` restores from any)

    def sources(self, ctx: RunContext) -> list[Source]:
        prod = [production_source(ctx)] if self.cfg.production else []
        return prod + copy_sources(ctx, self.cfg.copies)

    async def read_seal(self, ctx: RunContext) -> tuple[float, list[Entry], Path]:
        path = asset_manifest_path(ctx.config, ctx.asset)
        if path is None or not await asyncio.to_thread(seal_present, path):
            where = f"nothing at {path}: not sealed, or its location is not mounted" if path is not None \
                else "production is not a directory: set the asset's 'manifest'"
            raise ValidatorError("no_seal", f"no seal of the model to verify against ({where}); run `drwatch seal` "
                                            "after each backup")
        try:
            header, stream = await aread(path, trust=seal_trust(ctx.config, ctx.asset))
            with stream:  # closed even when the run is cut off while the seal is read
                return header.sealed_at, [e async for e in stream], path
        except OSError as exc:
            raise ValidatorError("manifest_unreadable", f"cannot read the seal: {exc.strerror}") from None

    async def run(self, ctx: RunContext) -> Report:
        findings: list[Finding] = []
        try:
            sealed_at, entries, manifest = await self.read_seal(ctx)
        except ManifestError as exc:
            finding = Finding(Severity.CRITICAL, exc.code, str(exc), "manifest")
            return Report(Outcome.FAILED, (finding,))
        if (ahead := seal_in_future(ctx, sealed_at)) is not None:
            return Report(Outcome.FAILED, (ahead,))  # like a corrupt seal: its recovery point is not believed
        seal = {e.key: e for e in entries}
        copies = [CopyCheck(s, limit=self.cfg.list_limit) for s in self.sources(ctx)]
        inf = self.cfg.inference
        inf_name = self.cfg.inference_copy(ctx.asset)
        restore_dir: Path | None = None
        if inf is not None:
            sandbox = await ctx.exit_stack.enter_async_context(ctx.sandboxes.directory(ctx.run_id))
            restore_dir = sandbox / "model"

        started = time.monotonic()
        await asyncio.gather(*(self.check_copy(ctx, c, seal, restore_dir if c.name == inf_name else None)
                               for c in copies))
        hash_seconds = time.monotonic() - started

        figures = _figures(seal, entries, copies, hash_seconds)
        inf_failed = inf_error = False
        target = next((c for c in copies if c.name == inf_name), None)
        if inf is not None and restore_dir is not None and target is not None:
            figures["restore_seconds"] = target.seconds
            inf_failed, inf_error = await self._inference(ctx, inf, target, restore_dir, manifest, figures, findings)

        now = ctx.clock()
        stale = now - sealed_at > ctx.asset.rpo.total_seconds()
        if stale:
            findings.append(Finding(Severity.CRITICAL, "rpo_exceeded",
                                    f"the newest seal is {format_duration(now - sealed_at)} old "
                                    f"(RPO {format_duration(ctx.asset.rpo.total_seconds())})", "manifest"))
        provider_media = ctx.config.compliance.provider_counts_as_media
        facts = [await copy_facts(c.src, c.state, c.storage_classes, provider_media) for c in copies]
        prod = next((f for c, f in zip(copies, facts, strict=True) if c.src.role == "production"), None)
        reports = []
        for c, fact in zip(copies, facts, strict=True):
            deps = self._dependencies(c, fact, prod, findings)
            reports.append(self._report(ctx, c, sealed_at, fact, deps, findings))
            findings.extend(c.findings)
            findings.extend(fact.findings)
        figures["copies_verified"] = float(sum(1 for r in reports if r.state == CopyState.VERIFIED))
        figures["recovery_point_age_seconds"] = max(0.0, now - sealed_at)
        # With production.frozen, production that no longer matches the seal fails too (production_drift).
        frozen = ctx.asset.production.frozen
        failed = any(r.state == CopyState.FAILED for r in reports if r.role == "copy" or frozen) or stale or inf_failed
        outcome = (Outcome.FAILED if failed else
                   Outcome.ERROR if any(r.state == CopyState.ERROR for r in reports) or inf_error else Outcome.OK)
        return Report(outcome, tuple(findings), figures, tuple(reports), sealed_at)

    # --- one copy ------------------------------------------------------------------------------

    async def check_copy(self, ctx: RunContext, c: CopyCheck, seal: dict[str, Entry], restore: Path | None) -> None:
        await files.check_copy(ctx, c, seal, restore, structure=self.cfg.structure)

    # --- reports -------------------------------------------------------------------------------

    @staticmethod
    def _dependencies(c: CopyCheck, fact: Facts, prod: Facts | None, findings: list[Finding]) -> tuple[str, ...]:
        """What makes an S3 copy depend on production (shared credentials, a KMS key in its region)."""
        if c.src.role != "copy" or prod is None:
            return ()
        deps, found = dependencies(c.name, fact, prod)
        findings.extend(found)
        return deps

    def _report(self, ctx: RunContext, c: CopyCheck, sealed_at: float, facts: Facts, deps: tuple[str, ...],
                findings: list[Finding]) -> CopyReport:
        if c.state is not None:
            state = c.state
        elif c.failed():
            state = CopyState.FAILED
        elif c.errors or c.broken:
            state = CopyState.ERROR
        else:
            state = CopyState.VERIFIED
        if c.src.role == "production" and state == CopyState.FAILED and c.state is None:
            frozen = ctx.asset.production.frozen
            findings.append(Finding(Severity.CRITICAL if frozen else Severity.WARNING, "production_drift",
                                    ("production is frozen but " if frozen else "production ")
                                    + "no longer matches the sealed model "
                                    f"({c.counts['missing']} missing, {c.counts['mismatch']} changed, "
                                    f"{c.counts['corrupt']} corrupt)", c.name))
        return copy_report(
            ctx, c.src, state, facts, c, verified=c.counts["verified"], text=_LOCK_TEXT, recovery_point=sealed_at,
            objects=dict(c.counts) if c.state is None else {}, bytes_verified=c.bytes_verified,
            evidence={"read": c.hashed, "structure": c.structure_checked} if c.state is None else {},
            deps=deps, findings=findings, reads=c.reads)

    # --- inference -----------------------------------------------------------------------------

    async def _inference(self, ctx: RunContext, inf: InferenceConfig, c: CopyCheck, model_dir: Path, manifest: Path,
                         figures: dict[str, float], findings: list[Finding]) -> tuple[bool, bool]:
        """Run the model restored from copy ``c``; returns (failed, error)."""
        if c.state is not None or c.broken or c.errors:
            findings.append(Finding(Severity.WARNING, "inference_not_run",
                                    "the copy could not be restored (see its findings)", c.name))
            return False, c.state != CopyState.FAILED
        if c.counts["missing"] or c.counts["corrupt"]:
            findings.append(Finding(Severity.INFO, "inference_skipped",
                                    f"the copy is already failed ({c.counts['missing']} missing, "
                                    f"{c.counts['corrupt']} corrupt files): the model cannot load", c.name))
            return False, False
        # The backup is to blame only when what was restored differs from the seal the goldens came from.
        return await smoke_test(ctx, inf, c.name, c.counts["mismatch"] > 0, model_dir, manifest, figures, findings)


GOLDEN = Family("drwatch_model_golden_similarity", "Lowest cosine similarity between the restored model's outputs "
                "and the recorded goldens at the latest inference smoke test.", ("asset",))
GOLDEN_THRESHOLD = Family("drwatch_model_golden_similarity_threshold", "The golden similarity an inference smoke "
                          "test requires.", ("asset",))
FILES = Family("drwatch_model_files", "Files of a model copy by state at the latest model check.",
               ("asset", "copy", "state"))


def project(latest: Sequence[Latest]) -> Iterator[Sample]:
    """Per asset: the lowest golden similarity and the highest it requires; per copy: its files by state."""
    goldens: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    for asset, _vcfg, result in latest:
        fig = result.figures
        if "golden_similarity" in fig:
            goldens[asset] = min(goldens.get(asset, fig["golden_similarity"]), fig["golden_similarity"])
        if "golden_similarity_threshold" in fig:
            thresholds[asset] = max(thresholds.get(asset, -1.0), fig["golden_similarity_threshold"])
        for rep in result.copies:
            for state in STATES:
                if state in rep.objects:
                    yield FILES.name, (asset, rep.copy, state), rep.objects[state]
    for family, values in ((GOLDEN, goldens), (GOLDEN_THRESHOLD, thresholds)):
        for asset, value in values.items():
            yield family.name, (asset,), value


PLUGIN = Plugin(ModelWeightsConfig, ModelWeightsValidator, (GOLDEN, GOLDEN_THRESHOLD, FILES), project)
