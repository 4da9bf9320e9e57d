"""The warnings a verification run ends with: objects no day's budget can read, a budget too small to read
every byte within ``read_every``."""

from __future__ import annotations

import math

from drwatch.core.durations import format_duration
from drwatch.core.model import Finding, Severity
from drwatch.core.sizes import format_size
from drwatch.validators.copies.ledger import DAY, OverBudget, Totals, VerificationPolicy, shortfall


def budget_findings(policy: VerificationPolicy, over: OverBudget, reference_reads: bool, asset: Totals,
                    meta_per_day: float) -> list[Finding]:
    """``asset``: the objects and bytes of the run's streams; ``meta_per_day``: metadata requests a day."""
    asset_objects, asset_bytes = asset.objects, asset.bytes
    period = policy.read_every.total_seconds()
    days = policy.read_every_days
    cap_b = policy.budget.egress_bytes_per_day
    cap_r = policy.budget.requests_per_day
    findings = []
    if over.objects:
        factor = 2 if reference_reads else 1
        need_all = max(over.largest, math.ceil(factor * asset_bytes / days))
        findings.append(Finding(
            Severity.WARNING, "verify_object_over_budget",
            f"{over.objects} object(s) ({format_size(over.bytes)}) each cost more to read than the whole "
            f"daily budget of {format_size(cap_b or 0)}: they are never read-verified (largest {over.example}, "
            f"{format_size(over.largest)}). Reading them needs a budget of at least "
            f"{format_size(over.largest)}/day; reading every byte within {format_duration(period)} needs "
            f"{format_size(need_all)}/day", "verification"))
    readable = Totals(max(0, asset_objects - over.objects), max(0, asset_bytes - over.bytes), 0)
    gap = shortfall(policy, readable, meta_per_day, reference_reads)
    if gap is None:
        return findings
    what = []
    if gap.bytes_short:
        what.append(f"{format_size(gap.needed_bytes_per_day)}/day of reads (budget "
                    f"{format_size(cap_b or 0)}/day)")
    if gap.requests_short:
        what.append(f"{gap.needed_requests_per_day} requests/day (budget {cap_r}/day)")
    days_full = gap.days_for_full_read
    full = "never" if math.isinf(days_full) else f"every {format_duration(days_full * DAY)}"
    which, each = ("byte", "byte") if not over.objects else (
        f"other byte (all but the {over.objects} object(s) over the daily budget)", "of those bytes")
    findings.append(Finding(Severity.WARNING, "verify_budget_too_small",
                            f"reading every {which} within {format_duration(period)} needs "
                            f"{' and '.join(what)}; at this budget each {each} is read {full}", "verification"))
    return findings
