"""Human and machine views of the state: the JSON document (API, ``check``/``status --output json``)
and the compliance table printed by the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from drwatch.compliance import RULES, AssetVerdict, RuleState, evaluate
from drwatch.errors import EXIT_NONCOMPLIANT, EXIT_OK, EXIT_UNCHECKED
from drwatch.model import Outcome, Result
from drwatch.snapshot import Snapshot


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def asset_doc(verdict: AssetVerdict) -> dict[str, Any]:
    return {
        "compliant": verdict.compliant,
        "rules": {r: {"state": verdict.rules[r].state.value, "detail": verdict.rules[r].detail} for r in RULES},
        "copies_verified": verdict.copies_verified,
        "recovery_point": _iso(verdict.recovery_point),
        "copies": [
            {"copy": c.name, "status": c.status, "reason": c.reason, "media": c.media, "site": c.site,
             "region": c.region, "provider": c.provider, "immutable": c.immutable}
            for c in verdict.copies
        ],
    }


def result_doc(result: Result) -> dict[str, Any]:
    doc = result.to_dict()
    doc["started_at"] = _iso(result.started_at)
    doc["finished_at"] = _iso(result.finished_at)
    doc["recovery_point"] = _iso(result.recovery_point)
    return doc


def latest_results(snap: Snapshot) -> list[Result]:
    out = []
    for asset, vcfg in snap.config.iter_validators():
        stats = snap.stats(asset, vcfg.label)
        if stats is not None and stats.last_result is not None:
            out.append(stats.last_result)
    return out


def document(snap: Snapshot, now: float, results: Iterable[Result] | None = None) -> dict[str, Any]:
    verdicts = evaluate(snap.config, snap, now)
    return {
        "generated_at": _iso(now),
        "assets": {name: asset_doc(v) for name, v in verdicts.items()},
        "results": [result_doc(r) for r in (latest_results(snap) if results is None else results)],
    }


def exit_code(snap: Snapshot, now: float, results: Iterable[Result] | None = None) -> int:
    """0 compliant; 1 a rule fails or a check failed; 2 something could not be checked."""
    verdicts = evaluate(snap.config, snap, now)
    res = list(latest_results(snap) if results is None else results)
    if any(r.outcome == Outcome.FAILED for r in res) or any(
        v.state == RuleState.FAIL for verdict in verdicts.values() for v in verdict.rules.values()
    ):
        return EXIT_NONCOMPLIANT
    if any(r.outcome != Outcome.OK for r in res) or any(not v.compliant for v in verdicts.values()):
        return EXIT_UNCHECKED
    return EXIT_OK


_MARK = {"pass": "pass", "fail": "FAIL", "unknown": "unknown"}


def table(doc: dict[str, Any]) -> str:
    header = ["asset", *RULES, "compliant"]
    rows = [header]
    for name, a in doc["assets"].items():
        rows.append([name, *(_MARK[a["rules"][r]["state"]] for r in RULES), "yes" if a["compliant"] else "no"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    details = []
    for name, a in doc["assets"].items():
        for r in RULES:
            rule = a["rules"][r]
            if rule["state"] != "pass":
                details.append(f"  {name}.{r}: {rule['state']}: {rule['detail']}")
    if details:
        lines += ["", "Why:", *details]
    problems = []
    for res in doc["results"]:
        if res["outcome"] != "ok":
            problems.append(f"  {res['asset']}/{res['validator']}: {res['outcome']}")
            for f in res["findings"][:8]:
                subject = f" [{f['subject']}]" if f["subject"] else ""
                problems.append(f"      {f['severity']} {f['code']}{subject}: {f['message']}")
            if len(res["findings"]) > 8:
                problems.append(f"      ... {len(res['findings']) - 8} more findings")
    if problems:
        lines += ["", "Checks that did not pass:", *problems]
    return "\n".join(lines)
