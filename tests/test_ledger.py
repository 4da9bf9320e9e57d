"""The verification ledger: the pure planner and cost model, the policy's config errors, and the store's
ledger tables on both backends (real SQLite file, real PostgreSQL server)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from drwatch.config.model import parse_config
from drwatch.core.errors import ConfigError
from drwatch.state.pricing import GB, monthly_cost
from drwatch.storage.prices import PriceTable
from drwatch.store import open_store
from drwatch.validators.copies.ledger import (
    DAY,
    CopySummary,
    LedgerBatch,
    LedgerRow,
    OverBudget,
    Totals,
    VerificationPolicy,
    composite_matches,
    daily_allowance,
    due_cutoff,
    over_day_budget,
    parse_size,
    select_reads,
    shortfall,
)
from tests.support.helpers import basic_config


def policy(read_every: str = "30d", **budget: Any) -> VerificationPolicy:
    return VerificationPolicy.model_validate({"read_every": read_every, "budget": budget})


def test_sizes_parse_decimal_and_binary_units() -> None:
    """Budgets accept bytes or text with decimal (MB) and binary (MiB) units; nonsense is refused."""
    assert parse_size(1024) == 1024
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1.5 GiB") == int(1.5 * 2**30)
    for bad in ("-1", "12 parsecs", True, -5):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_allowance_catches_up_then_keeps_the_pace() -> None:
    """Due bytes are read at once within the budget; once all is fresh the pace total/read_every remains;
    what was read earlier today counts towards the day."""
    p = policy("10d", egress_bytes_per_day=500)
    assert daily_allowance(p, Totals(10, 1000, due_bytes=1000)) == 500  # capped by the budget
    assert daily_allowance(p, Totals(10, 1000, due_bytes=0)) == 100  # the pace
    assert daily_allowance(p, Totals(10, 1000, due_bytes=300), spent_today=100) == 400
    assert daily_allowance(policy("10d"), Totals(10, 1000, due_bytes=1000)) == 1000  # no budget


def test_select_reads_takes_least_recently_read_first_and_a_due_misfit_reserves_the_day() -> None:
    """Rows come least recently read first; a due row that does not fit what is left today ends the plan
    (it reserves the day: a large object is never starved by smaller ones behind it) and reference reads
    are charged once per key."""
    rows = [LedgerRow("a", "k1", 100, None), LedgerRow("b", "k1", 100, None), LedgerRow("a", "k2", 300, 5.0),
            LedgerRow("a", "k3", 10, 6.0)]
    plan = select_reads(rows, 250, None)
    assert list(plan.reads) == [("a", "k1"), ("b", "k1")] and plan.egress_bytes == 200
    plan = select_reads(rows, 300, None, reference_read=True)
    assert list(plan.reads) == [("a", "k1"), ("b", "k1")] and plan.egress_bytes == 300 and plan.requests == 3
    plan = select_reads(rows, None, 2)
    assert list(plan.reads) == [("a", "k1"), ("b", "k1")]
    # k2 (read at 5) is due before 10 and fits a whole day (400): it reserves the rest of today
    plan = select_reads(rows, 250, None, day_budget=400, due_before=10.0)
    assert list(plan.reads) == [("a", "k1"), ("b", "k1")] and plan.over_budget == 0


def test_select_reads_passes_over_rows_no_day_can_read_and_rows_read_ahead() -> None:
    """A row costing more than a whole day's budget is passed over and counted (it can never be read, so it
    must not block the rows behind it); a row that is not due yet and does not fit today is passed over too
    (it becomes due in time and then reserves); a due row that fits a whole day still ends the plan."""
    rows = [LedgerRow("c", "big", 300, None), LedgerRow("c", "a", 100, None), LedgerRow("c", "b", 100, None)]
    plan = select_reads(rows, 200, None, day_budget=200, due_before=10.0)
    assert list(plan.reads) == [("c", "a"), ("c", "b")] and plan.over_budget == 1
    plan = select_reads(rows, 200, None, day_budget=599, due_before=10.0, reference_read=True)
    assert plan.over_budget == 1 and list(plan.reads) == [("c", "a")]  # 200 each with their reference
    ahead = [LedgerRow("c", "x", 150, 50.0), LedgerRow("c", "y", 100, 60.0), LedgerRow("c", "z", 80, 70.0)]
    plan = select_reads(ahead, 200, None, day_budget=400, due_before=10.0)  # none due: read ahead at pace
    assert list(plan.reads) == [("c", "x")]
    plan = select_reads(ahead, 120, None, day_budget=400, due_before=10.0)
    assert list(plan.reads) == [("c", "y")]  # x does not fit and is not due: y behind it may use the room
    plan = select_reads(ahead, 120, None, day_budget=400, due_before=55.0)
    assert not plan.reads  # x is due and fits a whole day: it reserves, y and z wait for their turn
    assert over_day_budget(201, 200) and not over_day_budget(200, 200) and not over_day_budget(10**12, None)
    assert over_day_budget(101, 200, reference_read=True)


def test_no_object_starves_under_a_daily_budget() -> None:
    """Day after day with the planner alone (a fresh budget each day, least recently read first, new
    objects arriving): every object that fits a day's budget is read within a bounded time, large ones
    included, and objects over the budget never are and never hold the others up."""
    cap, read_every = 1000, 10
    sizes = {"big": 900, "huge": 5000, **{f"s{i:02d}": 60 + 7 * i for i in range(20)}}
    read_at: dict[str, float | None] = dict.fromkeys(sizes)
    p = policy(f"{read_every}d", egress_bytes_per_day=cap)
    worst: dict[str, float] = {}
    for day in range(60):
        now = day * DAY
        if day % 3 == 0:  # a new object every third day, sorting before the others
            key = f"a{day:03d}"
            sizes[key] = 120
            read_at[key] = None
        order = sorted(sizes, key=lambda k: (read_at[k] is not None, read_at[k] or 0.0, k))
        stale = due_cutoff(p, now)
        readable = [k for k in sizes if sizes[k] <= cap]
        due = sum(sizes[k] for k in readable if (t := read_at[k]) is None or t < stale)
        allowance = daily_allowance(p, Totals(len(readable), sum(sizes[k] for k in readable), due))
        plan = select_reads((LedgerRow("c", k, sizes[k], read_at[k]) for k in order), allowance, None,
                            day_budget=cap, due_before=stale)
        assert plan.egress_bytes <= cap
        for _copy, key in plan.reads:
            read_at[key] = now
        if day >= 2 * read_every:
            for k in readable:
                t = read_at[k]
                age = math.inf if t is None else now - t
                worst[k] = max(worst.get(k, 0.0), age)
    assert read_at["huge"] is None
    assert max(worst.values()) <= read_every * DAY, {k: v / DAY for k, v in worst.items() if v > read_every * DAY}


def test_shortfall_says_what_full_coverage_would_take() -> None:
    """None when the budget suffices; else the bytes and requests per day needed and the days a full read
    takes at the budget."""
    totals = Totals(objects=3000, bytes=30 * GB, due_bytes=0)
    assert shortfall(policy("30d", egress_bytes_per_day=GB), totals, 0) is None
    gap = shortfall(policy("30d", egress_bytes_per_day=GB // 2), totals, 0)
    assert gap is not None and gap.bytes_short and not gap.requests_short
    assert gap.needed_bytes_per_day == GB and gap.days_for_full_read == 60
    gap = shortfall(policy("30d", requests_per_day=150), totals, metadata_requests_per_day=100)
    assert gap is not None and gap.requests_short and gap.needed_requests_per_day == 200
    assert gap.days_for_full_read == 60  # 3000 GETs at 50 spare requests a day


def test_over_budget_objects_add_up_and_name_the_largest() -> None:
    """The over-budget tally counts objects and bytes and keeps the largest read cost and its subject."""
    over = OverBudget().add("c:a", 300, 300).add("c:b", 500, 500).add("d:a", 300, 300)
    assert over == OverBudget(3, 1100, 500, "c:b")


def test_composite_checksums_compare_only_with_equal_part_layouts() -> None:
    """Equal composite values with the same part count prove equality; different values or part counts
    prove nothing (another layout of the same bytes), never a mismatch."""
    assert composite_matches("abc=-3", "abc=-3") is True
    assert composite_matches("abc=-3", "xyz=-3") is None
    assert composite_matches("abc=-3", "abc=-4") is None
    assert composite_matches("abc=", "abc=") is None  # full-object values are compared elsewhere


def test_monthly_cost_by_kind() -> None:
    """Storage by class (default for others), egress at the pace, requests by operation."""
    prices = PriceTable(storage_gb_month={"STANDARD": 0.023, "default": 0.01}, egress_gb=0.09,
                        requests_per_1000={"get": 0.0004, "default": 0.005})
    cost = monthly_cost(prices, {"STANDARD": 10 * GB, "GLACIER": 100 * GB}, egress_bytes_per_day=GB / 3,
                        requests_per_day={"get": 1000, "list": 10})
    assert cost["storage"] == pytest.approx(0.23 + 1.0)
    assert cost["egress"] == pytest.approx(10 * 0.09)
    assert cost["requests"] == pytest.approx(30 * 0.0004 + 0.3 * 0.005)


def _config_errors(tmp: Path, mutate: Any) -> list[tuple[str, str]]:
    cfg = basic_config(tmp)
    mutate(cfg)
    with pytest.raises(ConfigError) as exc:
        parse_config(yaml.safe_dump(cfg), str(tmp / "drwatch.yaml"))
    return [(p.path, p.message) for p in exc.value.problems]


def test_policy_and_price_table_errors_name_the_field(tmp_path: Path) -> None:
    """A wrong policy or price table is refused at load with the path of the offending field."""
    errs = _config_errors(tmp_path, lambda c: c["assets"]["data"].update(
        verification={"read_every": "12h", "budget": {"egress_bytes": 5}}))
    assert ("assets.data.verification.read_every", "read_every must be at least 1d (the budget is per day)") in errs
    assert ("assets.data.verification.budget.egress_bytes", "unknown key (not allowed here)") in errs
    errs = _config_errors(tmp_path, lambda c: c["assets"]["data"].update(
        verification={"budget": {"egress_bytes_per_day": "lots"}}))
    assert errs[0][0] == "assets.data.verification.budget.egress_bytes_per_day", errs
    errs = _config_errors(tmp_path, lambda c: c["locations"]["copy1"].update(
        pricing={"egress_gb": -1, "requests_per_1000": {"post": 1}}))
    assert {p for p, _ in errs} == {"locations.copy1.pricing.egress_gb", "locations.copy1.pricing.requests_per_1000"}
    ok = basic_config(tmp_path)
    ok["assets"]["data"]["verification"] = {"read_every": "30d", "budget": {"egress_bytes_per_day": "2GB",
                                                                           "requests_per_day": 100000}}
    ok["locations"]["copy1"]["pricing"] = {"storage_gb_month": {"default": 0.02}, "egress_gb": 0.09}
    cfg = parse_config(yaml.safe_dump(ok), str(tmp_path / "drwatch.yaml"))
    assert cfg.assets["data"].verification is not None
    assert cfg.assets["data"].verification.budget.egress_bytes_per_day == 2 * 10**9


async def test_store_ledger_tables(store_config: dict[str, Any], tmp_path: Path) -> None:
    """Both backends: batched upserts and deletes in one transaction, pages in code-point key order, the
    queue least recently read first (never read first), today's spending kept and yesterday's before it
    pruned, counters that add up, and summaries that load_state hands back."""
    cfg = parse_config(yaml.safe_dump(basic_config(tmp_path, store=store_config)), str(tmp_path / "d.yaml"))
    store = open_store(cfg)
    await store.open()
    try:
        keys = ["b/1", "B", "a", "é", "z"]
        rows = [("c1", k, 10 * (i + 1), f"etag:{i}", "STANDARD", "etag", f"{i}", 100.0,
                 None if k in ("z", "B") else 50.0 + i) for i, k in enumerate(keys)]
        await store.ledger_write(LedgerBatch("data", rows, [], day=10, egress_bytes=70, requests=3,
                                             counters={("loc", "requests:get"): 3, ("loc", "egress_bytes"): 70}))
        page = await store.ledger_page("data", "c1", "", 1000)
        assert [e.key for e in page] == sorted(keys)  # code points: "B" < "a" < "b/1" < "z" < "é"
        assert (await store.ledger_page("data", "c1", "b/1", 2))[0].key == "z"
        queue = await store.ledger_queue("data", 10, 0)
        assert [r.key for r in queue] == ["B", "z", "b/1", "a", "é"]
        totals = await store.ledger_totals("data", stale_before=52.0)
        assert totals["c1"] == Totals(5, 150, due_bytes=20 + 50 + 10)  # B, z never read; b/1 read before 52
        await store.ledger_write(LedgerBatch("data", [], [("c1", "é")], day=10, egress_bytes=30, requests=1,
                                             counters={("loc", "requests:get"): 1}))
        assert await store.ledger_spent("data", 10) == (100, 4)
        await store.ledger_write(LedgerBatch("data", [], [], day=12, egress_bytes=5, requests=1))
        assert await store.ledger_spent("data", 10) == (0, 0)  # older than yesterday: pruned
        assert await store.ledger_spent("data", 12) == (5, 1)
        base = CopySummary(location="loc", egress_bytes_per_day=7.0, requests_per_day={"get": 2.0},
                           period=100.0, computed_at=150.0)
        summary = await store.ledger_summary("data", "c1", since=52.0, base=base)
        assert summary.objects == 4 and summary.bytes == 110
        assert summary.bytes_by_evidence == {"read": 30, "checksum": 0, "etag": 110}  # "a" read at 52
        assert summary.oldest_read == 0.0  # some object was never read
        state = await store.load_state()
        assert state.verify[("data", "c1")] == summary
        assert state.verify_counters == {("loc", "requests:get"): 4, ("loc", "egress_bytes"): 70}
        assert json.loads(json.dumps(summary.to_dict())) == summary.to_dict()
    finally:
        await store.close()
