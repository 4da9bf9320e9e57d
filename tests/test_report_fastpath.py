"""The report's fast path (copies decoded by orjson and read by itemgetter, each validator's next moments kept when
its state changes) gives the same document as the plain path it replaced (json.loads, every copy read by .get,
every moment recomputed per event), on a varied estate: random copy states, media, sites, locks, retain-until
dates, offline flags and dependencies; copies stored by an older drwatch without some keys; cancelled, error and
timeout runs; a validator no longer configured; attestations and acknowledgements during the period."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from drwatch.config.model import load_config
from drwatch.core.model import CopyReport, CopyState, Finding, Outcome, Result, Severity
from drwatch.reporting import build, integrity, timeline
from drwatch.store.base import result_params
from drwatch.store.history import HistoryRows
from tests.support.reportestate import estate_config

DAY = 86400.0
NOW = 1.8e9


def _copy(rng: random.Random, name: str, location: str, t: float) -> CopyReport:
    state = rng.choice([CopyState.VERIFIED] * 6 + list(CopyState))
    return CopyReport(
        name, location, "production" if name == "production" else "copy", state,
        recovery_point=rng.choice([None, t - rng.uniform(0, 9 * DAY), t - 3600]),
        media=rng.choice(["hdd", "tape", "ssd"]), site=rng.choice(["dc-a", "dc-b", "dc-c"]),
        immutable=rng.choice([None, True, True, False]), offline=rng.random() < 0.2,
        objects=rng.choice([{}, {"verified": rng.randrange(1000)}, {"verified": 5, "missing": 2}]),
        bytes_verified=rng.randrange(2**40), region_observed=rng.random() < 0.3,
        lock=rng.choice([{}, {"compliance": 3}]), evidence=rng.choice([{}, {"etag": 4, "read": 1}]),
        retain_until_min=rng.choice([None, t + 7 * DAY + rng.uniform(0, DAY), t + rng.uniform(0, 60 * DAY)]),
        dependencies=rng.choice([(), (), ("shared_credentials",)]))


_OLD_KEYS = re.compile(r', "(region_observed|dependencies|retain_until_min|evidence)": (\[[^\]]*\]|\{[^}]*\}|[^,}]+)')


def _history(rng: random.Random, names: list[str]) -> HistoryRows:
    period: list[tuple[Any, ...]] = []
    before: list[tuple[Any, ...]] = []
    rid = 0
    results = []
    for i in range(900):
        t = NOW - 40 * DAY + i * 40 * DAY / 900 + rng.uniform(0, 100)
        asset = rng.choice(names)
        validator, kind = rng.choice([("replica", "replica"), ("restore-drill", "postgres_restore"),
                                      ("retired", "replica")])
        outcome = rng.choice([Outcome.OK] * 8 + list(Outcome))
        copies = tuple(_copy(rng, n, loc, t) for n, loc in (("production", "prod"), ("nas", "nas"),
                                                            ("vault", "vault")) if rng.random() < 0.95)
        figures = {"restore_seconds": rng.uniform(100, 5000), "rows_restored": 10.0} if kind != "replica" else {}
        findings = (Finding(Severity.CRITICAL, "missing_file", "gone", "nas"),) if outcome == Outcome.FAILED else ()
        results.append(Result(f"run-{i}", asset, validator, kind, outcome, t - 60, t, copies=copies, figures=figures,
                              findings=findings, recovery_point=t - 3600))
    for res in sorted(results, key=lambda r: r.finished_at):
        rid += 1
        params = list(result_params(res))
        if rng.random() < 0.15:  # stored by an older drwatch: some copy keys absent
            params[10] = _OLD_KEYS.sub("", params[10])
        row = (rid, *params, "h1" if rid < 500 else "h2", f"{rid:064x}")
        (period if res.finished_at >= NOW - 30 * DAY else before).append(row)
    latest: dict[tuple[str, str], tuple[Any, ...]] = {}
    for row in before:
        latest[(row[2], row[3])] = row
    stamps = [(r[2], r[3], r[5], r[7]) for r in before if r[5] in ("ok", "failed")]
    atts = [(a, "vault", "tape read", NOW - k * 5 * DAY, NOW - k * 5 * DAY - 7200) for a in names for k in range(8)]
    acks = [(names[0], "replica", "ops", "known", NOW - 12 * DAY)]
    return HistoryRows(period, list(latest.values()), stamps, sorted(atts, key=lambda a: a[3]), acks,
                       (rid, f"{rid:064x}"))


def _plain_decode(text: str) -> tuple[tuple[Any, ...], list[float], list[float], int, int]:
    """The decoding the report did before the fast path (json module, every field read by .get)."""
    signature: list[tuple[Any, ...]] = []
    rps: list[float] = []
    rus: list[float] = []
    objects = nbytes = 0
    for c in json.loads(text):
        get = c.get
        signature.append((c["copy"], c["state"], *map(get, timeline._SIGNATURE_FIELDS),
                          tuple(get("dependencies") or ())))
        if (rp := get("recovery_point")) is not None:
            rps.append(float(rp))
        if (ru := get("retain_until_min")) is not None:
            rus.append(float(ru))
        if got := get("objects"):
            objects += int(got.get("verified", 0))
        nbytes += int(get("bytes_verified", 0))
    return tuple(signature), rps, rus, objects, nbytes


def _plain_refresh(self: Any, rpo: float, horizon: float, window: float) -> None:
    self.ticks = tuple(m + timeline._TICK for m in self._moments(rpo, horizon, window))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_path_gives_the_same_document(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = estate_config(tmp_path, assets=4)
    names = list(raw["assets"])
    raw["assets"][names[0]]["copies"][0]["location"] = "dumps"  # one asset's copy on the same site as its dumps
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(str(tmp_path / "c.yaml"))
    rows = _history(random.Random(seed), names)
    assert any("region_observed" not in r[11] for r in rows.period)  # the older layout is in the estate
    since, until = NOW - 30 * DAY, NOW
    fast = {every: integrity.canonical(build.build(cfg, rows, since, until, every_run=every))
            for every in (True, False)}
    with monkeypatch.context() as m:
        m.setattr(timeline, "_decode_copies", _plain_decode)
        m.setattr(timeline._Validator, "refresh", _plain_refresh)
        plain = {every: integrity.canonical(build.build(cfg, rows, since, until, every_run=every))
                 for every in (True, False)}
    assert fast == plain
    doc = json.loads(fast[True])
    intervals = [iv for a in doc["assets"].values() for iv in a["compliance"]["intervals"]]
    assert len(intervals) > 20 and any(iv["compliant"] for iv in intervals)  # the estate moves the verdict
    assert {v["outcome"] for a in doc["assets"].values() for v in a["verifications"]} >= {"ok", "failed", "error"}

