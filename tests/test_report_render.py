"""The report and the status page rendered by a real headless Chromium (Debian's package, driven over the
DevTools protocol): what a person sees shows the failing asset, its reason and a drill's restore time; the page
makes no request but its own, logs no console error, and needs no JavaScript (page scripts are disabled). The
status page shows, per asset, the states /metrics exports for the same snapshot."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from drwatch.config.model import load_config
from drwatch.core.durations import format_duration
from drwatch.engine.runner import AppState
from drwatch.http.server import HttpServer
from drwatch.metrics.collector import ProcessState
from drwatch.state.compliance import RULES
from drwatch.state.snapshot import load_snapshot
from tests.support.chromium import browser, file_url
from tests.support.reportestate import FAILING, FIXED
from tests.test_report import _estate, _report


async def test_report_renders_in_chromium(tmp_path: Path) -> None:
    cfg_path = await _estate(tmp_path, {"sqlite": str(tmp_path / "state.sqlite")})
    doc = _report(cfg_path, tmp_path / "report.json")
    _report(cfg_path, tmp_path / "report.html", "html")
    async with browser() as chrome:
        seen = await chrome.render(file_url(tmp_path / "report.html"))
        phone = await chrome.render(file_url(tmp_path / "report.html"), width=390, height=844, mobile=True)
    assert seen.requests == [file_url(tmp_path / "report.html")], seen.requests  # nothing external, nothing else
    assert seen.console == [] and phone.console == []
    text = seen.text
    assert re.search(rf"{FAILING} Compliant [0-9.]+% of the period; now NOT compliant", text)
    assert "nas: latest check found it bad" in text
    drill = doc["assets"][FIXED]["drills"][-1]
    assert format_duration(drill["restore_seconds"]) in text
    assert "OVER RTO" in text and "within RTO" in text
    assert "not fixed" in text  # the open failure of the failing asset
    # Outside text is shown as text, never as markup.
    assert "<script>alert(1)</script>.csv" in text
    assert phone.text == text


def _metric_states(body: str) -> dict[str, dict[str, str]]:
    states: dict[str, dict[str, str]] = {}
    for asset, rule, state in re.findall(
            r'^drwatch_asset_rule_state\{asset="([^"]+)",rule="([^"]+)",state="([^"]+)"\} 1\.0$', body, re.M):
        states.setdefault(asset, {})[rule] = state
    return states


async def test_status_page_in_chromium_shows_what_metrics_exports(tmp_path: Path) -> None:
    cfg_path = await _estate(tmp_path, {"sqlite": str(tmp_path / "state.sqlite")})
    cfg = load_config(str(cfg_path))
    snap = await load_snapshot(cfg)

    async def reload() -> tuple[bool, list[str]]:
        return True, []

    server = HttpServer(AppState(cfg, snap, ProcessState(time.time()), ready=True), reload)
    await server.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}/"
    try:
        async with browser() as chrome:
            seen = await chrome.render(base)
            phone = await chrome.render(base, width=390, height=844, mobile=True)
        metrics = await __import__("asyncio").to_thread(
            lambda: urllib.request.urlopen(base + "metrics", timeout=30).read().decode())
    finally:
        await server.stop()
    assert seen.requests == [base] and seen.console == [] and phone.console == []
    text = seen.text
    states = _metric_states(metrics)
    assert set(states) == set(cfg.assets)
    for asset, rules in states.items():
        # The row of each asset: its name, the why-lines, then one cell per rule in RULES order.
        row = re.search(re.escape(asset) + r" (?:.*? )?" + " ".join(rules[r] for r in RULES) + r" (yes|no)", text)
        assert row, (asset, rules)
        assert row.group(1) == ("yes" if all(s == "pass" for s in rules.values()) else "no")
    assert states[FAILING]["copies"] == "fail"
    assert "nas: latest check found it bad" in text
    drill = snap.stats(FIXED, "restore-drill")
    assert drill is not None and drill.last_result is not None
    assert format_duration(drill.last_result.figures["restore_seconds"]) in text
    assert "/metrics" in text and "/api/v1/status" in text
