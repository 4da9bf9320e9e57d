"""Validator ``consistency_group``: the members of a consistency group can be restored to one point in time.

Attached to one member asset of a group (``{kind: consistency_group, group: rag}``), it checks:

- **skew**: the newest recovery points that drwatch *proved* for each member (verified copies and successful
  drills whose results are still fresh) lie within ``max_skew`` of each other; otherwise it names the newest
  consistent set (one proven point per member within ``max_skew``) and how old it is;
- **embedding model** (optional): the vector index's seal carries the stamp of the model that embedded it
  (``drwatch seal --stamp embedding_model=MODEL_MANIFEST``), which must equal the model asset's seal digest;
- **documents** (optional): a sample of document ids referenced by the vector index (read-only query on its
  production database) exists in the document store's recovery point (its seal) and in each of its copies.

Outcomes: ``failed`` for skew beyond ``max_skew``, a stamp that does not match (or is absent), or documents
missing; ``error`` when a member has no proven recovery point yet, or a seal, database or copy could not be
read; ``ok`` otherwise.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from drwatch.core.durations import format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.model import CopyState, Finding, Outcome, Report, Severity
from drwatch.formats.manifest import ManifestError, SealSignatureInvalid, SealUnsigned, aread
from drwatch.formats.seals import seal_digest, seal_header
from drwatch.storage.config import FilesystemLocationConfig
from drwatch.storage.s3 import S3Missing, S3Unavailable
from drwatch.validators.assetseal import asset_manifest_path, seal_trust
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.groups import DocumentsCheck, SkewVerdict, judge_skew
from drwatch.validators.plugin import Plugin
from drwatch.validators.postgres import pgtools

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView, ResultsView
    from drwatch.validators.groups import ConsistencyGroupConfig

_CHECKED_PARALLEL = 16  # existence checks in flight per copy


class ConsistencyGroupValidatorConfig(ValidatorConfigBase):
    reads_results: ClassVar[bool] = True

    kind: Literal["consistency_group"] = "consistency_group"
    group: str

    def locations(self, asset: AssetView) -> list[str]:
        return []  # reads the stored state and seals; copy existence checks are a small sample

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        group = cfg.consistency_groups.get(self.group)
        if group is None:
            known = ", ".join(sorted(cfg.consistency_groups)) or "none defined"
            return [ConfigProblem("group", f"unknown consistency group {self.group!r} (known: {known})")]
        if asset_name not in group.assets:
            return [ConfigProblem("group", f"asset {asset_name!r} is not a member of consistency group "
                                           f"{self.group!r} (members: {', '.join(group.assets)})")]
        owners = [(a, v.label) for a, asset_cfg in cfg.assets.items() for v in asset_cfg.validators
                  if isinstance(v, ConsistencyGroupValidatorConfig) and v.group == self.group]
        if owners and owners[0] != (asset_name, self.label):
            return [ConfigProblem("group", f"consistency group {self.group!r} is already checked by "
                                           f"assets.{owners[0][0]} validator {owners[0][1]!r}: one per group")]
        return []

    def judges(self, asset_name: str, cfg: ConfigView) -> list[tuple[str, str]]:
        """Every validator of every member proves (or not) its recovery points."""
        group = cfg.consistency_groups.get(self.group)
        if group is None:
            return []
        return [(member, v.label) for member in group.assets if member in cfg.assets
                for v in cfg.assets[member].validators if not v.reads_results]


def _candidates(snap: ResultsView, cfg: ConfigView, asset_name: str, now: float) -> list[float]:
    """Recovery points drwatch proved for the asset with results that are still fresh."""
    asset = cfg.assets[asset_name]
    points: set[float] = set()
    for fact in snap.copy_facts(asset_name).values():
        rep = fact.report
        if (rep.role == "copy" and rep.state == CopyState.VERIFIED and rep.recovery_point is not None
                and fact.fresh_until >= now):
            points.add(rep.recovery_point)
    for vcfg in asset.validators:
        res = snap.last_result(asset_name, vcfg.label)
        if (res is not None and res.outcome == Outcome.OK and res.recovery_point is not None and not res.copies
                and res.finished_at + vcfg.effective_max_age(cfg) >= now):
            points.add(res.recovery_point)  # drills that prove a point without per-copy reports
    return sorted(points)


class ConsistencyGroupValidator:
    kind: ClassVar[str] = "consistency_group"

    def __init__(self, cfg: ConsistencyGroupValidatorConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        group = ctx.config.consistency_groups.get(self.cfg.group)
        if group is None or ctx.results is None:
            raise ValidatorError("no_group", f"consistency group {self.cfg.group!r} is not configured")
        findings: list[Finding] = []
        figures: dict[str, float] = {"max_skew_seconds": group.max_skew.total_seconds()}
        problems = unknown = 0  # checks that failed / could not be done
        now = ctx.clock()
        snap = ctx.results()

        candidates = {m: _candidates(snap, ctx.config, m, now) for m in group.assets}
        unproven = [m for m, pts in candidates.items() if not pts]
        for member in unproven:
            unknown += 1
            findings.append(Finding(Severity.WARNING, "member_unproven",
                                    "no verified recovery point with a fresh result (its validators have not "
                                    "proven one yet)", member))
        problems += self._skew(judge_skew(candidates, group.max_skew.total_seconds()), group, now, findings,
                               figures)
        if group.embedding_model is not None:
            ok, found = await self._stamp(ctx, group)
            findings.extend(found)
            problems += ok is False
            unknown += ok is None
            if ok is not None:
                figures["embedding_model_match"] = 1.0 if ok else 0.0
        if group.documents is not None:
            missing, found = await self._documents(ctx, group.documents)
            findings.extend(found)
            if missing is None:
                unknown += 1
            else:
                figures["documents_missing"] = float(missing)
                problems += missing > 0
            problems += any(f.code in SEAL_AUTH_CODES for f in found)  # the document store's seal is not its own

        if problems:
            outcome = Outcome.FAILED
        elif unknown:
            outcome = Outcome.ERROR
        else:
            outcome = Outcome.OK
        figures["state_consistent"] = 1.0 if outcome == Outcome.OK else 0.0
        return Report(outcome, tuple(findings), figures)

    def _skew(self, verdict: SkewVerdict | None, group: ConsistencyGroupConfig, now: float,
              findings: list[Finding], figures: dict[str, float]) -> int:
        """The skew between the members' newest proven points (figures and a finding): 1 if it exceeds
        max_skew."""
        if verdict is None:
            return 0
        figures["skew_seconds"] = verdict.skew
        point = verdict.consistent_set_point()
        if point is not None:
            figures["consistent_set_timestamp_seconds"] = point
            figures["consistent_set_age_seconds"] = max(0.0, now - point)
        if not verdict.skewed:
            figures["skewed"] = 0.0
            return 0
        figures["skewed"] = 1.0
        newest = ", ".join(f"{m} {format_duration(max(0.0, now - p))} old" for m, p in verdict.newest.items())
        if verdict.consistent_set is None:
            tail = "no set of proven recovery points lies within max_skew"
        else:
            tail = (f"newest consistent set is {format_duration(max(0.0, now - (point or now)))} old: "
                    + ", ".join(f"{m}@{p:.0f}" for m, p in verdict.consistent_set.items()))
        findings.append(Finding(
            Severity.CRITICAL, "skew_exceeded",
            f"newest recovery points are {format_duration(verdict.skew)} apart (max_skew "
            f"{format_duration(group.max_skew.total_seconds())}): {newest}; {tail}", self.cfg.group))
        return 1

    async def _stamp(self, ctx: RunContext, group: ConsistencyGroupConfig) -> tuple[bool | None, list[Finding]]:
        check = group.embedding_model
        assert check is not None
        paths: dict[str, Path] = {}
        for role, member in (("vectors", check.vectors), ("model", check.model)):
            path = asset_manifest_path(ctx.config, ctx.config.assets[member])
            if path is None:
                return None, [Finding(Severity.WARNING, "seal_unknown",
                                      f"asset {member!r} has no seal location (set 'manifest')", member)]
            paths[role] = path
        try:
            header = await seal_header(paths["vectors"], seal_trust(ctx.config, ctx.config.assets[check.vectors]))
            _, digest = await seal_digest(paths["model"], seal_trust(ctx.config, ctx.config.assets[check.model]))
        except ManifestError as exc:
            code = "seal_corrupt" if exc.code == ManifestError.code else exc.code  # signature findings as such
            return False, [Finding(Severity.CRITICAL, code, str(exc), "embedding_model")]
        except OSError as exc:
            return None, [Finding(Severity.WARNING, "seal_unreadable",
                                  f"cannot read a seal: {exc.strerror or type(exc).__name__}", "embedding_model")]
        stamp = (header.extra or {}).get(check.key)
        if stamp is None:
            return False, [Finding(Severity.CRITICAL, "embedding_model_unstamped",
                                   f"the seal of {check.vectors!r} does not say which model embedded it (no "
                                   f"{check.key!r}; seal with --stamp {check.key}=MODEL_MANIFEST)", check.vectors)]
        if stamp != digest:
            return False, [Finding(Severity.CRITICAL, "embedding_model_mismatch",
                                   f"{check.vectors!r} was embedded with model {str(stamp)[:19]}…, the backed-up "
                                   f"model {check.model!r} is {digest[:19]}…", check.vectors)]
        return True, []

    async def _documents(self, ctx: RunContext, check: DocumentsCheck) -> tuple[int | None, list[Finding]]:
        """Sampled document ids missing from the document store's seal or copies (None: could not check)."""
        try:
            ids = await _sample_ids(ctx, check)
        except ValidatorError as exc:
            return None, [Finding(Severity.WARNING, exc.code, exc.message, "documents")]
        if not ids:
            return None, [Finding(Severity.WARNING, "documents_no_ids",
                                  f"{check.ids.table}.{check.ids.column} holds no document ids", "documents")]
        paths = {doc_id: check.path.replace("{id}", doc_id) for doc_id in ids}
        bad = [i for i, p in paths.items() if p.startswith("/") or ".." in p.split("/")]
        if bad:
            return None, [Finding(Severity.WARNING, "documents_bad_id",
                                  f"document id {bad[0]!r} does not make a relative key", "documents")]
        asset = ctx.config.assets[check.asset]
        missing: set[str] = set()
        findings: list[Finding] = []
        could_not = False
        seal = asset_manifest_path(ctx.config, asset)
        if seal is not None and await asyncio.to_thread(seal.is_file):
            wanted = set(paths.values())
            try:
                _, entries = await aread(seal, ctx.exit_stack, seal_trust(ctx.config, asset))  # closed however
                async for entry in entries:
                    wanted.discard(entry.key)
            except (SealUnsigned, SealSignatureInvalid) as exc:
                could_not = True
                findings.append(Finding(Severity.CRITICAL, exc.code, f"document store seal: {exc}", "seal"))
            except (ManifestError, OSError) as exc:
                could_not = True
                findings.append(Finding(Severity.WARNING, "seal_unreadable", f"document store seal: {exc}", "seal"))
            else:
                lost = [i for i, p in paths.items() if p in wanted]
                missing.update(lost)
                if lost:
                    findings.append(_missing_finding(lost, len(ids), "seal"))
        for ref in asset.copies:
            try:
                lost = await _missing_in_copy(ctx, ref.location, ref.prefix, paths)
            except ValidatorError as exc:
                could_not = True
                findings.append(Finding(Severity.WARNING, exc.code, f"cannot check: {exc.message}", ref.label))
                continue
            missing.update(lost)
            if lost:
                findings.append(_missing_finding(lost, len(ids), ref.label))
        if missing or not could_not:
            return len(missing), findings
        return None, findings


SEAL_AUTH_CODES = frozenset({SealUnsigned.code, SealSignatureInvalid.code})

def _missing_finding(lost: list[str], sampled: int, where: str) -> Finding:
    shown = ", ".join(sorted(lost)[:5]) + (" ..." if len(lost) > 5 else "")
    return Finding(Severity.CRITICAL, "documents_missing",
                   f"{len(lost)} of {sampled} sampled documents referenced by the vector index are missing: {shown}",
                   where)


async def _sample_ids(ctx: RunContext, check: DocumentsCheck) -> list[str]:
    """A sample of distinct ids, different on every run (seeded by the run id), read in a read-only session."""
    params = check.ids.params("documents.ids", ctx.config)
    limit = max(1.0, min(60.0, ctx.remaining()))
    conn = await pgtools.connect(params, code="ids_unavailable", what="document ids database", read_only=True,
                                 statement_timeout=limit)
    try:
        table = pgtools.qualified(pgtools.split_table(check.ids.table))
        col = pgtools.quote_ident(check.ids.column)
        sql = (f"SELECT v FROM (SELECT DISTINCT {col}::text AS v FROM {table} WHERE {col} IS NOT NULL) d "
               "ORDER BY md5(v || $1) LIMIT $2")
        rows = await asyncio.wait_for(conn.fetch(sql, ctx.run_id, check.sample), limit)
    except (TimeoutError, *pgtools.CONNECT_ERRORS) as exc:
        raise ValidatorError("ids_unavailable", f"cannot read document ids: {type(exc).__name__}") from None
    finally:
        await pgtools.close_connection(conn)
    return [str(r["v"]) for r in rows]


async def _missing_in_copy(ctx: RunContext, location: str, prefix: str, paths: dict[str, str]) -> list[str]:
    """Ids whose document does not exist in the copy (existence only: replica validators prove content)."""
    loc = ctx.config.locations[location]
    sem = asyncio.Semaphore(_CHECKED_PARALLEL)
    if isinstance(loc, FilesystemLocationConfig):
        root = ctx.config.resolve_path(loc.path)
        base = root / prefix if prefix else root
        if not await asyncio.to_thread(root.is_dir):
            raise ValidatorError("location_unavailable", f"{root} is not a readable directory")

        def exists(rel: str) -> bool:
            return (base / rel).is_file()

        async def fs_check(doc_id: str, rel: str) -> str | None:
            async with sem:
                return None if await asyncio.to_thread(exists, rel) else doc_id

        found = await asyncio.gather(*(fs_check(i, p) for i, p in paths.items()))
        return [i for i in found if i is not None]
    if ctx.s3 is None:
        raise ValidatorError("no_s3_pool", "S3 locations need the daemon's client pool")
    client = ctx.s3.get(location, loc)

    async def s3_check(doc_id: str, rel: str) -> str | None:
        async with sem:
            try:
                await client.head(f"{prefix}/{rel}" if prefix else rel)
            except S3Missing:
                return doc_id
            return None

    try:
        found = await asyncio.gather(*(s3_check(i, p) for i, p in paths.items()))
    except S3Unavailable as exc:
        raise ValidatorError(exc.code, exc.message) from None
    return [i for i in found if i is not None]


PLUGIN = Plugin(ConsistencyGroupValidatorConfig, ConsistencyGroupValidator)
