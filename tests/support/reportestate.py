"""A test estate with a 30-day history for reports and the status page: results as validators would store them
(replica checks every period, a daily restore drill), a failure that was fixed, one still open, drills over the
RTO, an offline copy with attestations. Used by tests/test_report.py, benchmarks/report_scale.py and
scripts/report-screenshots.py."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drwatch.core.model import Attestation, CopyReport, CopyState, Finding, Outcome, Result, Severity

if TYPE_CHECKING:
    from drwatch.store import Store

DAY = 86400.0
FAILING = "billing"  # fails at the end: its latest replica check found a copy bad
FIXED = "orders"  # failed for two days in the middle of the period, proven fixed since


def asset_names(n: int) -> list[str]:
    base = [FIXED, FAILING, "customers", "ledger", "media-assets"]
    return base[:n] + [f"asset-{i:03d}" for i in range(len(base), n)]


def estate_config(tmp: Path, assets: int = 5, store: dict[str, Any] | None = None) -> dict[str, Any]:
    locations = {
        "prod": {"kind": "filesystem", "path": str(tmp / "prod"), "site": "dc-a", "media": "ssd"},
        "nas": {"kind": "filesystem", "path": str(tmp / "nas"), "site": "dc-b", "media": "hdd"},
        "vault": {"kind": "filesystem", "path": str(tmp / "vault"), "site": "dc-c", "media": "tape",
                  "offline": True},
        "dumps": {"kind": "filesystem", "path": str(tmp / "dumps"), "site": "dc-b", "media": "hdd"},
    }
    return {
        "store": store or {"sqlite": str(tmp / "state.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "locations": locations,
        "compliance": {"copies": 3, "media": 2, "offsite": 1, "immutable": 1},
        "assets": {name: {
            "rpo": "7d", "rto": "1h",
            "production": {"location": "prod", "prefix": name},
            "copies": [{"location": "nas", "prefix": name}, {"location": "vault", "prefix": name}],
            "validators": [{"kind": "replica", "schedule": {"every": "1d"}},
                           {"kind": "postgres_restore", "name": "restore-drill", "location": "dumps",
                            "prefix": name, "schedule": {"every": "3d"}}],
        } for name in asset_names(assets)},
    }


def _copies(t: float, ok: bool, objects: int) -> tuple[CopyReport, ...]:
    state = CopyState.VERIFIED if ok else CopyState.FAILED
    counts = {"verified": objects} if ok else {"verified": objects - 3, "missing": 3}
    return (
        CopyReport("production", "prod", "production", CopyState.VERIFIED, t - 3600, "ssd", site="dc-a",
                   objects={"verified": objects}, bytes_verified=objects * 65536),
        CopyReport("nas", "nas", "copy", state, t - 3600, "hdd", site="dc-b", objects=counts,
                   bytes_verified=counts["verified"] * 65536),
        CopyReport("vault", "vault", "copy", CopyState.OFFLINE, None, "tape", site="dc-c", offline=True),
    )


def estate_history(now: float, assets: int = 5, results: int = 1000, days: float = 31.0,
                   seed: int = 7) -> tuple[list[Result], list[Attestation]]:
    """``results`` results in all over the last ``days``, spread over the assets (a fifth of them drills), in
    the order they finished; and the vault attestations (one a week per asset)."""
    rng = random.Random(seed)
    names = asset_names(assets)
    start = now - days * DAY
    per_asset = max(2, results // assets)
    out: list[Result] = []
    for name in names:
        drills = max(1, per_asset // 5)
        checks = per_asset - drills
        for i in range(checks):
            t = start + (i + 1) * (days * DAY) / checks - rng.uniform(0, 60)
            frac = (t - start) / (days * DAY)
            bad = (name == FIXED and 0.40 <= frac < 0.47) or (name == FAILING and frac >= 0.97)
            objects = 400 + rng.randrange(100)
            findings = (Finding(Severity.CRITICAL, "missing_file", "3 files of the recovery point are missing "
                                "from nas (e.g. <script>alert(1)</script>.csv)", "nas"),) if bad else ()
            out.append(Result(f"{name}-replica-{i}", name, "replica", "replica",
                              Outcome.FAILED if bad else Outcome.OK, t - 40 - rng.uniform(0, 30), t,
                              findings=findings, copies=_copies(t, not bad, objects), recovery_point=t - 3600,
                              figures={"objects": float(objects)}))
        for i in range(drills):
            t = start + (i + 1) * (days * DAY) / drills - 1800 - rng.uniform(0, 60)
            restore = rng.uniform(900, 3300) if rng.random() > 0.1 else rng.uniform(3700, 5400)
            rows = float(rng.randrange(1_000_000, 5_000_000))
            over = restore > 3600
            findings = (Finding(Severity.WARNING, "rto_exceeded", f"restore took {restore:.0f} s (RTO 1h)",
                                "dumps"),) if over else ()
            out.append(Result(f"{name}-drill-{i}", name, "restore-drill", "postgres_restore", Outcome.OK,
                              t - restore - 120, t, findings=findings, recovery_point=t - 7200,
                              figures={"restore_seconds": restore, "rows_restored": rows, "tables": 12.0}))
    out.sort(key=lambda r: r.finished_at)
    attestations = [Attestation(name, "vault", f"tape {k} read back and checked by ops", start + k * 6 * DAY + 600,
                                start + k * 6 * DAY - 3000)
                    for name in names for k in range(0, int(days // 6) + 1)]
    return out, attestations


async def record_estate(store: Store, now: float, config_hash: str, assets: int = 5, results: int = 1000) -> None:
    """The estate's history (:func:`estate_history`) recorded in an open store as the daemon records it: the
    results, then the attestations made by ``now``."""
    history, attestations = estate_history(now, assets, results)
    for res in history:
        await store.record(res, config_hash)
    for att in attestations:
        if att.created_at <= now:
            await store.add_attestation(att)
