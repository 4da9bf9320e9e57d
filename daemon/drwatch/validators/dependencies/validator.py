"""Validator ``recovery_dependencies``: what an asset's restore needs is reachable, and does not fall with production.

An asset declares the services its restore depends on (``dns``, ``identity``, ``kms_key``, ``registry``,
``terraform_state``, or any ``tcp`` / ``https`` endpoint) and the site and/or region each lives in. A run probes
each from where drwatch runs (:mod:`.probes`: DNS resolution, TCP connect, HTTPS status with TLS verification,
KMS ``DescribeKey`` with drwatch's own credentials, the stored verdict of a ``terraform_state`` validator), each
within its ``timeout``, and judges where each lives: a dependency in production's failure domain (same site or same
region; production's is its location's declared site and region, the S3 bucket's observed region when none is
declared, or ``failure_domain``) whose role (``provides``) has no alternative declared elsewhere is
``dependency_in_failure_domain``: when that site or region is lost, recovery waits for the very thing that was lost.

Outcomes: ``failed`` when a dependency answered no or did not answer (``dependency_unreachable``,
``dependency_tls_invalid``, ``dependency_unhealthy``, ``dependency_key_unusable``): a restore started now from this
host would stop there, so it pages the owners like a bad backup; and, with ``domain_policy: failure``, for
``dependency_in_failure_domain`` (a warning by default: a fact of the architecture, not of today). ``error`` when a
probe could not be done with drwatch's own means (``dependency_not_checked``: credentials missing or refused, CA file
unreadable, no fresh Terraform state verdict) or production's failure domain is unknown, and nothing failed. The
result proves no copy and no recovery point.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from drwatch.core.cancels import TaskGroup
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.storage.config import S3LocationConfig
from drwatch.storage.s3 import S3Unavailable
from drwatch.validators.base import RunContext
from drwatch.validators.dependencies.config import RecoveryDependenciesConfig, dependency_where
from drwatch.validators.dependencies.probes import Probe, probe
from drwatch.validators.plugin import Family, Latest, Plugin, Sample

_PARALLEL = 16  # probes in flight


class RecoveryDependenciesValidator:
    kind: ClassVar[str] = "recovery_dependencies"

    def __init__(self, cfg: RecoveryDependenciesConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        deps = self.cfg.dependencies
        gate = asyncio.Semaphore(_PARALLEL)
        loop = asyncio.get_running_loop()
        figures: dict[str, float] = {"dependencies": float(len(deps))}

        async def one(dep: Any) -> Probe:
            async with gate:
                started = loop.time()
                got = await probe(dep, ctx)
                figures[f"probe_seconds.{dep.name}"] = round(loop.time() - started, 6)
                return got

        async with TaskGroup() as tg:  # 3.11: its own cancel withdrawn (core.cancels)
            tasks = [tg.create_task(one(dep)) for dep in deps]
        findings: list[Finding] = []
        unknown = False
        for dep, task in zip(deps, tasks, strict=True):
            got = task.result()
            if got.state == "unknown":
                unknown = True
                findings.append(Finding(Severity.WARNING, got.code, f"{dep.kind} {dep.name}: {got.message}", dep.name))
                continue
            figures[f"up.{dep.name}"] = 1.0 if got.state == "up" else 0.0
            if got.state == "down":
                findings.append(Finding(Severity.CRITICAL, got.code, f"{dep.kind} {dep.name}: {got.message}",
                                        dep.name))
        site, region = await self._production_domain(ctx)
        if site or region:
            findings += self._domains(ctx, site, region, figures)
        else:
            unknown = True
            findings.append(Finding(Severity.WARNING, "failure_domain_unknown", "production's location declares "
                                    "no site or region and none was observed: set failure_domain", "production"))
        failed = any(f.severity == Severity.CRITICAL for f in findings)
        outcome = Outcome.FAILED if failed else Outcome.ERROR if unknown else Outcome.OK
        if outcome == Outcome.OK:
            findings.append(Finding(Severity.INFO, "dependencies_ok", f"all {len(deps)} dependencies answered",
                                    ""))
        return Report(outcome, tuple(findings), figures)

    async def _production_domain(self, ctx: RunContext) -> tuple[str, str]:
        if self.cfg.failure_domain is not None:
            return self.cfg.failure_domain.site, self.cfg.failure_domain.region
        name = ctx.asset.production.location
        loc = ctx.config.locations[name]
        site, region = loc.site, loc.region or ""
        if not region and isinstance(loc, S3LocationConfig) and ctx.s3 is not None:
            # unreadable: the site alone still decides; with neither the run says failure_domain_unknown
            with contextlib.suppress(S3Unavailable):
                region = (await ctx.s3.get(name, loc).bucket_facts()).region or ""
        return site, region

    def _domains(self, ctx: RunContext, site: str, region: str, figures: dict[str, float]) -> list[Finding]:
        """Dependencies in production's site or region whose role has no alternative outside it."""
        inside: dict[str, bool] = {}
        elsewhere: dict[str, bool] = defaultdict(bool)
        for dep in self.cfg.dependencies:
            dsite, dregion = dependency_where(dep, ctx.config)
            inside[dep.name] = bool((dsite and dsite == site) or (dregion and dregion == region))
            elsewhere[dep.role] |= not inside[dep.name]
        severity = Severity.CRITICAL if self.cfg.domain_policy == "failure" else Severity.WARNING
        where = " / ".join(p for p in (f"site {site}" if site else "", f"region {region}" if region else "") if p)
        findings = []
        for dep in self.cfg.dependencies:
            alone = inside[dep.name] and not elsewhere[dep.role]
            figures[f"in_failure_domain.{dep.name}"] = 1.0 if alone else 0.0
            if alone:
                findings.append(Finding(severity, "dependency_in_failure_domain", f"{dep.kind} {dep.name} lives in "
                                        f"production's failure domain ({where}) and no alternative for "
                                        f"{dep.role!r} is declared elsewhere: recovery would wait for it",
                                        dep.name))
        return findings


_LABELS = ("asset", "validator", "dependency", "kind")
UP = Family("drwatch_dependency_up", "1 when the recovery dependency answered as a restore needs it at the latest "
            "run, 0 when it did not; absent when it could not be checked.", _LABELS)
IN_DOMAIN = Family("drwatch_dependency_in_failure_domain", "1 when the recovery dependency shares production's "
                   "failure domain (site or region) and no alternative for its role is declared elsewhere.", _LABELS)
PROBE = Family("drwatch_dependency_probe_duration_seconds", "How long the latest probe of the recovery dependency "
               "took.", _LABELS)


def project(latest: Sequence[Latest]) -> Iterator[Sample]:
    """Per configured dependency (its name and kind as labels, bounded by the configuration): up, in the failure
    domain, probe duration, from the latest result."""
    for asset, vcfg, result in latest:
        fig = result.figures
        for dep in vcfg.dependencies:
            labels = (asset, vcfg.label, dep.name, dep.kind)
            for family, key in ((UP, "up"), (IN_DOMAIN, "in_failure_domain"), (PROBE, "probe_seconds")):
                value = fig.get(f"{key}.{dep.name}")
                if value is not None:
                    yield family.name, labels, value


PLUGIN = Plugin(RecoveryDependenciesConfig, RecoveryDependenciesValidator, (UP, IN_DOMAIN, PROBE), project)
