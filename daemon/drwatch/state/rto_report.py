"""The restore-time model in the status document (API, ``status``/``check --output json``) and the CLI table."""

from __future__ import annotations

from typing import Any

from drwatch.core.durations import format_duration
from drwatch.state.rto import AssetProjection


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def restore_doc(p: AssetProjection) -> dict[str, Any]:
    """Per asset: the projected restore time, from which copy and why; each copy's projection and inputs; the
    latest drill's measured restore against its projection; the model's findings."""
    latest = p.drills.latest
    return {
        "rto_seconds": p.rto,
        "projected_seconds": _r(p.seconds),
        "copy": p.copy,
        "within_rto": None if p.seconds is None or p.rto is None else p.seconds <= p.rto,
        "why": p.why,
        "copies": [{
            "copy": c.copy, "location": c.location, "projected_seconds": _r(c.seconds), "counted": c.counted,
            "offsite": c.offsite, "immutable": c.immutable, "size_bytes": c.size_bytes,
            "throughput_bytes_per_second": _r(c.throughput, 1), "throughput_from": c.throughput_from,
            "samples": c.samples, "retrieval_seconds": c.retrieval_seconds, "storage_class": c.storage_class,
            "fixed_seconds": _r(c.fixed_seconds), "lower_bound": c.lower_bound, "why": c.why,
        } for c in p.copies],
        "drill": None if latest is None else {
            "validator": latest.validator, "measured_seconds": _r(latest.measured),
            "projected_seconds": _r(latest.projected), "error_ratio": _r(latest.error, 4),
            "compared": len(p.drills.comparisons),
        },
        "findings": [f.to_dict() for f in p.findings],
    }


def _cell(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def restore_lines(assets: dict[str, Any]) -> list[str]:
    """The "Restore time" section of the CLI table: declared RTO, projected (and from which copy), measured."""
    rows = [["asset", "RTO", "projected", "from copy", "drill measured", "model error"]]
    why: list[str] = []
    for name, a in assets.items():
        r = a.get("restore")
        if r is None or (r["rto_seconds"] is None and r["projected_seconds"] is None):
            continue  # no RTO and nothing projected: nothing to say
        drill = r.get("drill") or {}
        rows.append([name, _cell(r["rto_seconds"]), _cell(r["projected_seconds"])
                     + (" OVER RTO" if r["within_rto"] is False else ""), r["copy"] or "-",
                     _cell(drill.get("measured_seconds")),
                     "-" if drill.get("error_ratio") is None else f"{drill['error_ratio']:+.0%}"])
        why.append(f"  {name}: {r['why']}")
        why.extend(f"  {name}: {f['severity']} {f['code']}" + (f" [{f['subject']}]" if f["subject"] else "")
                   + f": {f['message']}" for f in r["findings"])
    if len(rows) == 1:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["", "Restore time (projected from measured throughput, retrieval latency and drills):",
            *("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows),
            "", "Why (restore time):", *why]
