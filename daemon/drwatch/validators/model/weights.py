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
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from drwatch.core.durations import format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.extras import ENGINES, Need
from drwatch.core.model import CopyReport, CopyState, Finding, Outcome, Report, Severity
from drwatch.formats import safetensors as st
from drwatch.formats.manifest import ManifestError, aread
from drwatch.formats.parquet import s3_range
from drwatch.formats.seals import seal_present
from drwatch.storage.filesystem import CHUNK, MANIFEST_NAME, Entry, HashCancelled, alist, aopen
from drwatch.storage.hashing import new_hash
from drwatch.storage.s3 import S3Unavailable, classify
from drwatch.storage.sources import Facts, FilesystemSource, S3Source, Source
from drwatch.validators.assetseal import asset_manifest_path, seal_trust
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies.merge import Tally
from drwatch.validators.copies.posture import (
    LockText,
    copy_facts,
    copy_report,
    copy_sources,
    dependencies,
    open_source,
    probe_location,
    production_source,
    record_lock,
    unknown_copies,
)
from drwatch.validators.copies.timetrust import seal_in_future
from drwatch.validators.model.inference.drill import InferenceConfig, smoke_test
from drwatch.validators.plugin import Family, Latest, Plugin, Sample

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView

STATES = ("verified", "missing", "mismatch", "corrupt", "extra")
_LOCATION_DOWN = frozenset({"unreachable", "no_credentials", "access_denied"})
_INDEX_SUFFIX = ".safetensors.index.json"
_INDEX_MAX = 64 * 1024**2
_LOCK_TEXT = LockText(
    unversioned="bucket versioning is {versioning}",
    unlocked="{n} file(s) of the model carry no Object Lock retention",
    governance="{n} file(s) are only GOVERNANCE-locked",
    expiring="a lock of the model expires in {left}",
)


class ModelWeightsConfig(ValidatorConfigBase):
    kind: Literal["model_weights"] = "model_weights"
    copies: list[str] | None = None  # check only these copies (default: all)
    production: bool = True  # verify production against the seal too
    structure: bool = True  # safetensors headers and index files
    list_limit: int = Field(default=10, ge=1)
    inference: InferenceConfig | None = None

    def inference_copy(self, asset: AssetView) -> str | None:
        if self.inference is None:
            return None
        if self.inference.copy_name is not None:
            return self.inference.copy_name
        return asset.copies[0].label if asset.copies else None

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        known = {c.label for c in asset.copies}
        problems = unknown_copies(self.copies, asset)
        if self.inference is not None:
            name = self.inference_copy(asset)
            if name is None:
                problems.append(ConfigProblem("inference.copy", "the asset has no backup copy to restore"))
            elif name not in known:
                problems.append(ConfigProblem("inference.copy", f"unknown copy {name!r} (asset copies: "
                                                                f"{sorted(known)})"))
            elif self.copies is not None and name not in self.copies:
                problems.append(ConfigProblem("inference.copy", f"copy {name!r} is not among 'copies'"))
        return problems

    def needs(self) -> list[Need]:
        if self.inference is None or self.inference.python is not None:  # another interpreter: not checkable here
            return []
        return [Need("inference.engine", ENGINES[self.inference.engine], "inference_engine_missing",
                     f"the inference engine {self.inference.engine}")]


@dataclass
class CopyCheck(Tally):
    """One location's tallies in a ``model_weights`` run: the copy tally of the copies family
    (:class:`drwatch.validators.copies.merge.Tally`) plus what the model checks count."""

    limit: int = 10  # findings listed one by one per code (list_limit), then only counted
    corrupt: int = 0
    bytes_hashed: int = 0
    hashed: int = 0
    structure_checked: int = 0
    seconds: float = 0.0
    skip: set[str] = field(default_factory=set)  # files already counted as gone or unreadable

    @property
    def counts(self) -> dict[str, int]:
        """Files by state (``STATES``): the copy report's objects."""
        return {"verified": self.verified, "missing": self.missing, "mismatch": self.mismatch,
                "corrupt": self.corrupt, "extra": self.extra}

    def flag(self, code: str, message: str, key: str, severity: Severity = Severity.CRITICAL) -> None:
        """A finding about one file (``note`` with this location's ``limit``)."""
        self.note(code, message, key, self.limit, severity)

    def failed(self) -> bool:
        return bool(self.missing or self.mismatch or self.corrupt)


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


def _s3_key(src: S3Source, key: str) -> str:
    base = src.prefix.strip("/")
    return f"{base}/{key}" if base else key


def _copy_file(src: Path, dest: Path, stop: threading.Event, algorithm: str = "sha256") -> tuple[str, int]:
    """Copy while hashing with the seal's ``algorithm`` (blocking; stops at the next chunk once ``stop`` is set)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = new_hash(algorithm)
    total = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as fi, open(dest, "wb") as fo:
        while n := fi.readinto(buf):
            if stop.is_set():
                raise HashCancelled(str(src))
            digest.update(view[:n])
            fo.write(view[:n])
            total += n
    return digest.hexdigest(), total


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

    async def _probe(self, c: CopyCheck) -> bool:
        c.state, finding = await probe_location(c.src)
        if finding is not None:
            c.findings.append(finding)
        return c.state is None

    async def check_copy(self, ctx: RunContext, c: CopyCheck, seal: dict[str, Entry], restore: Path | None) -> None:
        started = time.monotonic()
        try:
            if await self._probe(c):
                await self._check_files(ctx, c, seal, restore)
        finally:
            c.seconds = time.monotonic() - started

    async def _check_files(self, ctx: RunContext, c: CopyCheck, seal: dict[str, Entry], restore: Path | None) -> None:
        listed = await self._list(c)
        if listed is None:
            return
        listing, unlisted = listed
        for prefix, reason in unlisted:
            c.errors += 1
            c.flag("unreadable", f"cannot list directory: {reason}; the files under it could not be checked", prefix,
                   Severity.WARNING)
        for key in sorted(seal.keys() - listing.keys()):
            if any(key.startswith(prefix) for prefix, _ in unlisted):
                c.errors += 1  # under an unlistable directory: could not check, never missing
                continue
            c.missing += 1
            c.flag("missing_file", "file of the sealed model is missing", key)
        for key in sorted(listing.keys() - seal.keys()):
            c.extra += 1
            c.flag("extra_file", "file not in the sealed model", key, Severity.WARNING)
        present = sorted(seal.keys() & listing.keys())
        window = asyncio.Semaphore(max(2, ctx.hashes.workers * 2))
        corrupt: set[str] = set()
        if self.cfg.structure:
            await self._structure(c, seal, listing, present, window, corrupt)
        await asyncio.gather(*(self._guard(c, self._verify(c, listing[k], seal[k], k in corrupt, restore, window), k)
                               for k in present))

    async def _list(self, c: CopyCheck) -> tuple[dict[str, Entry], list[tuple[str, str]]] | None:
        """The copy's files (the seal itself left out) and the filesystem directories that could not be listed
        (permission: their files could not be checked); None when the listing failed (the copy is broken off)."""
        listing: dict[str, Entry] = {}
        unlisted: list[tuple[str, str]] = []

        def unlistable(prefix: str, exc: OSError) -> None:  # runs in the walk's thread
            unlisted.append((prefix, exc.strerror or type(exc).__name__))

        entries = (alist(c.src.root, on_unreadable=unlistable) if isinstance(c.src, FilesystemSource)
                   else c.src.entries())
        try:
            async for e in entries:
                if e.key != MANIFEST_NAME:
                    listing[e.key] = e
        except S3Unavailable as exc:
            c.break_off(exc.code, f"listing failed: {exc.message}")
            return None
        except OSError as exc:
            c.break_off("unreadable", f"listing failed: {exc.strerror or type(exc).__name__}")
            return None
        return listing, unlisted

    async def _structure(self, c: CopyCheck, seal: dict[str, Entry], listing: dict[str, Entry], present: list[str],
                         window: asyncio.Semaphore, corrupt: set[str]) -> None:
        """safetensors headers and their index files: the corrupt ones are added to ``corrupt``."""
        tensors: dict[str, frozenset[str] | None] = {k: None for k in seal if k.endswith(".safetensors")}

        async def header(key: str) -> None:
            async with window:
                layout = await self._layout(c, listing[key])
            if layout is None:
                return
            c.structure_checked += 1
            if layout.ok:
                tensors[key] = layout.names
                return
            corrupt.add(key)
            for p in layout.problems:
                c.flag(p.code, p.message, key)

        await asyncio.gather(*(self._guard(c, header(k), k) for k in present if k.endswith(".safetensors")))
        for key in (k for k in present if k.endswith(_INDEX_SUFFIX)):
            problems = await self._guard(c, self._index(c, listing[key], tensors), key)
            for p in problems or []:
                severe = p.code != st.INDEX_UNLISTED_TENSOR
                if severe:
                    corrupt.add(key)
                c.flag(p.code, p.message, key, Severity.CRITICAL if severe else Severity.WARNING)
        c.corrupt += len(corrupt)

    async def _verify(self, c: CopyCheck, entry: Entry, ref: Entry, corrupt: bool, restore: Path | None,
                      window: asyncio.Semaphore) -> None:
        """One file against the seal: its lock facts (S3), then size and digest (read, or restored)."""
        key = ref.key
        if isinstance(c.src, S3Source):
            head = await c.src.head(entry)
            if head is not None:
                record_lock(c, head)
        if corrupt:
            return
        if restore is None and entry.size != ref.size:
            c.mismatch += 1
            c.flag("size_mismatch", f"size {entry.size} != sealed {ref.size}", key)
            return
        async with window:
            digest, n = await (self._restore(c, entry, restore, ref.algorithm) if restore is not None
                               else c.src.sha256(entry, ref.algorithm))
        c.hashed += 1
        c.bytes_hashed += n
        if n != ref.size:
            c.mismatch += 1
            c.flag("size_mismatch", f"size {n} != sealed {ref.size}", key)
        elif digest != ref.sha256:
            c.mismatch += 1
            c.flag("content_mismatch", f"{ref.algorithm} differs from the seal", key)
        else:
            c.verified += 1
            c.bytes_verified += n

    async def _guard(self, c: CopyCheck, work: Any, key: str) -> Any:
        """Run one file's work; a failing read costs that file (or the whole copy when its location is down)."""
        if c.broken or key in c.skip:
            work.close()
            return None
        try:
            return await work
        except FileNotFoundError:
            c.missing += 1
            c.flag("missing_file", "file vanished during the check", key)
        except S3Unavailable as exc:
            if exc.code in _LOCATION_DOWN:
                c.break_off(exc.code, exc.message)
            else:
                c.errors += 1
                c.flag("unreadable", f"cannot read: {exc.message}", key, Severity.WARNING)
        except OSError as exc:
            c.errors += 1
            c.flag("unreadable", f"cannot read: {exc.strerror or type(exc).__name__}", key, Severity.WARNING)
        c.skip.add(key)
        return None

    async def _layout(self, c: CopyCheck, entry: Entry) -> st.Layout | None:
        if isinstance(c.src, FilesystemSource):
            return await asyncio.to_thread(st.check_file, c.src.root.joinpath(*entry.parts))
        if isinstance(c.src, S3Source):
            loc, key = c.src.client, _s3_key(c.src, entry.key)
            return await st.check_reader(lambda off, n: s3_range(loc, key, off, off + n), entry.size)
        return None

    async def _index(self, c: CopyCheck, entry: Entry, tensors: dict[str, frozenset[str] | None]) -> list[st.Problem]:
        if entry.size > _INDEX_MAX:
            return [st.Problem(st.INDEX_INVALID, f"index of {entry.size} bytes is implausibly large")]
        if isinstance(c.src, FilesystemSource):
            data = await asyncio.to_thread(c.src.root.joinpath(*entry.parts).read_bytes)
        elif isinstance(c.src, S3Source):
            data = await s3_range(c.src.client, _s3_key(c.src, entry.key), 0, entry.size) if entry.size else b""
        else:
            return []
        base = PurePosixPath(entry.key).parent
        shards = {str(PurePosixPath(k).relative_to(base)) if str(base) != "." else k: v
                  for k, v in tensors.items() if str(base) == "." or PurePosixPath(k).is_relative_to(base)}
        return st.check_index(data, shards, self.cfg.list_limit)

    async def _restore(self, c: CopyCheck, entry: Entry, root: Path, algorithm: str) -> tuple[str, int]:
        """Copy one file into the sandbox while hashing it (this is the copy's digest check, in the seal's
        ``algorithm``)."""
        dest = root.joinpath(*entry.parts)
        if isinstance(c.src, FilesystemSource):
            stop = threading.Event()
            try:
                return await asyncio.to_thread(_copy_file, c.src.root.joinpath(*entry.parts), dest, stop, algorithm)
            except asyncio.CancelledError:
                stop.set()
                raise
        assert isinstance(c.src, S3Source)
        loc = c.src.client
        client = await loc.client()
        digest = new_hash(algorithm)
        total = 0
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        fh = await aopen(dest, "wb")  # never left open by a cancellation while it is being opened

        def consume(chunk: bytes) -> None:
            digest.update(chunk)
            fh.write(chunk)

        try:
            try:
                resp = await client.get_object(Bucket=loc.cfg.bucket, Key=_s3_key(c.src, entry.key))
            except Exception as exc:
                raise classify(exc, loc.name) from None
            body = resp["Body"]
            try:
                while True:
                    try:
                        chunk = await body.read(CHUNK)
                    except Exception as exc:
                        raise classify(exc, loc.name) from None
                    if not chunk:
                        break
                    total += len(chunk)
                    await asyncio.to_thread(consume, chunk)  # a local write error stays an OSError of the sandbox
            finally:
                body.close()
        finally:
            await asyncio.to_thread(fh.close)
        return digest.hexdigest(), total

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
            deps=deps, findings=findings)

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
