"""What a new installation's report says: an asset first checked during the period gets its share of time
compliant from its first result on beside the period's (before it, it was never checked), one never checked says
so; and a failure is described by its most severe finding, not by a warning listed before it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from drwatch.config.model import load_config
from drwatch.core.model import Finding, Outcome, Result, Severity
from drwatch.reporting import build, html
from drwatch.state.report import iso_time
from drwatch.store.base import result_params
from drwatch.store.history import HistoryRows
from tests.support.reportestate import _copies, estate_config

DAY = 86400.0
NOW = 1.8e9


def _row(rid: int, res: Result) -> tuple[object, ...]:
    return (rid, *result_params(res), "h", f"{rid:064x}")


def test_new_asset_share_since_its_first_check_and_failure_reason(tmp_path: Path) -> None:
    raw = estate_config(tmp_path, assets=3)
    new, old, never = list(raw["assets"])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(str(tmp_path / "c.yaml"))
    since = NOW - 30 * DAY
    first = NOW - 2 * DAY
    warning = Finding(Severity.WARNING, "same_failure_domain", "the copy is on production's device", "nas")
    critical = Finding(Severity.CRITICAL, "content_mismatch", "content differs from the recovery point", "nas")
    period = []
    rid = 0
    for i in range(8):  # the new asset: checked every 6 h from two days ago; one failure in the middle
        t = first + i * 6 * 3600
        bad = i == 3
        rid += 1
        period.append(_row(rid, Result(f"new-{i}", new, "replica", "replica", Outcome.FAILED if bad else Outcome.OK,
                                       t - 30, t, copies=_copies(t, not bad, 10),
                                       findings=(warning, critical) if bad else (warning,))))
        rid += 1
        period.append(_row(rid, Result(f"drill-{i}", new, "restore-drill", "postgres_restore", Outcome.OK, t - 900,
                                       t + 60, figures={"restore_seconds": 840.0, "rows_restored": 10.0})))
    before = [_row(1000, Result("old-0", old, "replica", "replica", Outcome.OK, since - 90, since - 60,
                                copies=_copies(since - 60, True, 10)))]
    attested = [(new, "vault", "tape read back", first - 100, first - 3600)]
    rows = HistoryRows(period, before, [(old, "replica", "ok", since - 60)], attested, [], (rid, f"{rid:064x}"))
    doc = build.build(cfg, rows, since, NOW)

    c = doc["assets"][new]["compliance"]
    assert c["checked_from"] == iso_time(first)
    assert c["share_compliant"] < 0.1  # 28 of the 30 days before its first check
    assert c["share_compliant_checked"] == round(c["compliant_seconds"] / (NOW - first), 6)
    assert c["share_compliant_checked"] > c["share_compliant"] * 10
    o = doc["assets"][old]["compliance"]
    assert o["checked_from"] == iso_time(since) and o["share_compliant_checked"] == o["share_compliant"]
    n = doc["assets"][never]["compliance"]
    assert n["checked_from"] is None and n["share_compliant_checked"] is None

    (episode,) = doc["assets"][new]["failures"]
    assert episode["message"] == critical.message and episode["codes"] == ["same_failure_domain", "content_mismatch"]

    page = html.render(doc)
    assert re.search(rf'id="asset-{new}"><h2>{new}</h2><p>Compliant <b>[0-9.]+%</b> of the period '
                     r"\(<b>[0-9.]+%</b> since its first check, ", page)
    assert re.search(rf'id="asset-{old}"><h2>{old}</h2><p>Compliant <b>[0-9.]+%</b> of the period; now', page)
    assert re.search(rf'id="asset-{never}"><h2>{never}</h2><p>Compliant <b>0.0%</b> of the period '
                     r"\(never checked\); now", page)
    assert f"content_mismatch: {critical.message}" in page
