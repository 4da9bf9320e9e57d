"""Human and machine views of the state: the JSON document (API, ``check``/``status --output json``)
and the compliance table printed by the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from drwatch.core.durations import format_duration
from drwatch.core.errors import EXIT_NONCOMPLIANT, EXIT_OK, EXIT_UNCHECKED
from drwatch.core.model import Outcome, Result, worst_first
from drwatch.core.textsafe import escape
from drwatch.state.compliance import RULES, AssetVerdict, RuleState, evaluate
from drwatch.state.consistency import group_state
from drwatch.state.pricing import verified_copies
from drwatch.state.rto import project
from drwatch.state.rto_report import restore_doc, restore_lines
from drwatch.state.snapshot import Snapshot


def iso_time(ts: float | None) -> str | None:
    """ISO 8601 of a stored time; a value no calendar holds (a corrupt source, stored earlier) is shown as
    it is rather than failing the whole report."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return f"invalid time {ts!r}"


def asset_doc(verdict: AssetVerdict) -> dict[str, Any]:
    return {
        "compliant": verdict.compliant,
        "rules": {r: {"state": verdict.rules[r].state.value, "detail": verdict.rules[r].detail} for r in RULES},
        "copies_verified": verdict.copies_verified,
        "recovery_point": iso_time(verdict.recovery_point),
        "copies": [
            {"copy": c.name, "status": c.status, "reason": c.reason, "media": c.media, "site": c.site,
             "region": c.region, "provider": c.provider, "immutable": c.immutable}
            for c in verdict.copies
        ],
    }


def result_doc(result: Result) -> dict[str, Any]:
    doc = result.to_dict()
    doc["started_at"] = iso_time(result.started_at)
    doc["finished_at"] = iso_time(result.finished_at)
    doc["recovery_point"] = iso_time(result.recovery_point)
    return doc


def latest_results(snap: Snapshot) -> list[Result]:
    out = []
    for asset, vcfg in snap.config.iter_validators():
        stats = snap.stats(asset, vcfg.label)
        if stats is not None and stats.last_result is not None:
            out.append(stats.last_result)
    return out


def verification_doc(snap: Snapshot) -> dict[str, Any]:
    """Per asset and copy under a verification policy: coverage, oldest read and monthly cost (production too,
    when it is verified against a seal: its cost is verification egress and requests, not storage)."""
    out: dict[str, Any] = {}
    for asset, copy, summary, costs in verified_copies(snap.config, snap.verify, sorted(snap.config.assets)):
        out.setdefault(asset, {})[copy] = {
            "objects": summary.objects, "bytes": summary.bytes,
            "coverage": {e: round(summary.coverage(e), 6) for e in ("read", "checksum", "etag")},
            "oldest_read": iso_time(summary.oldest_read) if summary.oldest_read else None,
            "as_of": iso_time(summary.computed_at),
            "cost_monthly": None if costs is None else {k: round(v, 4) for k, v in costs[0].items()},
            "currency": None if costs is None else costs[1],
        }
    return out


def document(snap: Snapshot, now: float, results: Iterable[Result] | None = None) -> dict[str, Any]:
    verdicts = evaluate(snap.config, snap, now)
    restore = project(snap.config, snap, verdicts, now)
    return {
        "generated_at": iso_time(now),
        "assets": {name: {**asset_doc(v), "restore": restore_doc(restore[name])} for name, v in verdicts.items()},
        "results": [result_doc(r) for r in (latest_results(snap) if results is None else results)],
        "verification": verification_doc(snap),
        "consistency_groups": {name: group_doc(snap, name, now) for name in snap.config.consistency_groups},
        "acks": acks_doc(snap),
    }


def acks_doc(snap: Snapshot) -> list[dict[str, Any]]:
    """The newest ``drwatch ack`` of each configured validator: who, why, when."""
    labels = {(a, v.label) for a, acfg in snap.config.assets.items() for v in acfg.validators}
    return [{"asset": a, "validator": v, "by": ack.by, "reason": ack.reason, "at": iso_time(ack.created_at)}
            for (a, v), ack in sorted(snap.acks.items()) if (a, v) in labels]


def group_doc(snap: Snapshot, name: str, now: float) -> dict[str, Any]:
    state, res = group_state(snap.config, snap, name, now)
    group = snap.config.consistency_groups[name]
    doc: dict[str, Any] = {"state": state.value, "assets": list(group.assets),
                           "max_skew_seconds": group.max_skew.total_seconds()}
    if res is not None:
        doc["checked_at"] = iso_time(res.finished_at)
        doc["outcome"] = res.outcome.value
        for key in ("skew_seconds", "consistent_set_age_seconds", "documents_missing"):
            if key in res.figures:
                doc[key] = res.figures[key]
        doc["findings"] = [f.to_dict() for f in res.findings]
    return doc


def exit_code(snap: Snapshot, now: float, results: Iterable[Result] | None = None,
              assets: Iterable[str] | None = None) -> int:
    """0 compliant; 1 a rule fails or a check failed; 2 something could not be checked. With ``assets``,
    only those assets' verdicts count (``check --asset``: the exit code answers for the selection)."""
    verdicts = evaluate(snap.config, snap, now)
    if assets is not None:
        chosen = set(assets)
        verdicts = {name: v for name, v in verdicts.items() if name in chosen}
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
            for f in worst_first(res["findings"])[:8]:
                subject = f" [{f['subject']}]" if f["subject"] else ""
                problems.append(f"      {f['severity']} {f['code']}{subject}: {f['message']}")
            if len(res["findings"]) > 8:
                problems.append(f"      ... {len(res['findings']) - 8} more findings (--output json lists all)")
    if problems:
        lines += ["", "Checks that did not pass:", *problems]
    lines += _group_lines(doc.get("consistency_groups") or {})
    lines += _verification_lines(doc.get("verification") or {})
    lines += restore_lines(doc["assets"])
    acks = doc.get("acks") or []
    if acks:
        lines += ["", "Acknowledged (drwatch ack):",
                  *(f"  {a['asset']}/{a['validator']}: {a['at']} by {a['by']}: {a['reason']}" for a in acks)]
    # File names and messages that quote them come from outside: no control character reaches the terminal,
    # and a name with a newline cannot forge a row (each element of ``lines`` stays one line).
    return "\n".join(escape(line) for line in lines)


def _group_lines(groups: dict[str, Any]) -> list[str]:
    """The consistency groups: state, skew of the members' newest proven recovery points, and why a group is
    not consistent (its check's findings, or why there is no current check)."""
    rows = [["group", "state", "skew", "max skew", "members"]]
    why = []
    for name, g in groups.items():
        skew = g.get("skew_seconds")
        rows.append([name, g["state"], "-" if skew is None else format_duration(skew),
                     format_duration(g["max_skew_seconds"]), ", ".join(g["assets"])])
        if g["state"] == "consistent":
            continue
        findings = g.get("findings") or []
        if "checked_at" not in g:
            why.append(f"  {name}: never checked (no consistency_group validator result yet)")
        elif g.get("outcome") == "ok" or not findings:
            why.append(f"  {name}: last checked {g['checked_at']} ({g.get('outcome')}): stale")
        for f in worst_first(findings)[:8]:
            subject = f" [{f['subject']}]" if f["subject"] else ""
            why.append(f"  {name}: {f['severity']} {f['code']}{subject}: {f['message']}")
        if len(findings) > 8:
            why.append(f"  {name}: ... {len(findings) - 8} more findings")
    if len(rows) == 1:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["", "Consistency groups:",
             *("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)]
    return lines + (["", "Why (consistency groups):", *why] if why else [])


def _verification_lines(verification: dict[str, Any]) -> list[str]:
    rows = [["asset/copy", "read", "checksum", "etag", "oldest read", "cost/month (storage+egress+requests)"]]
    for asset, copies in verification.items():
        for copy, v in copies.items():
            cov = v["coverage"]
            cost = v["cost_monthly"]
            rows.append([
                f"{asset}/{copy}", *(f"{cov[e]:.1%}" for e in ("read", "checksum", "etag")),
                (v["oldest_read"] or "never (some object)")[:19],
                "-" if cost is None else f"{sum(cost.values()):.2f} {v['currency']} "
                f"({cost.get('storage', 0.0):.2f}+{cost['egress']:.2f}+{cost['requests']:.2f})",
            ])
    if len(rows) == 1:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["", "Verification coverage (within read_every) and cost:",
            *("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)]
