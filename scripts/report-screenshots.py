#!/usr/bin/env python3
"""Screenshots of ``drwatch report`` (HTML) and of the status page at ``/``, for the README and docs/reports.md.

Builds the test estate of tests/support/reportestate.py (5 assets, 30 days: a failure fixed, one still open,
drills over the RTO, attestations) in a temporary SQLite store, writes the HTML report with the real
``drwatch report`` command, serves the status page from a real drwatch HTTP server over the same store, and
renders both in Debian's headless Chromium (tests/support/chromium.py). Writes docs/img/report.png (the top of
the report, 1200 px wide) and docs/img/status-page.png (a phone, 390 px wide).

    python3 scripts/report-screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "daemon"))

from tests.support.chromium import browser, file_url  # noqa: E402
from tests.support.reportestate import estate_config, record_estate  # noqa: E402

from drwatch.config.model import load_config  # noqa: E402
from drwatch.engine.runner import AppState  # noqa: E402
from drwatch.http.server import HttpServer  # noqa: E402
from drwatch.metrics.collector import ProcessState  # noqa: E402
from drwatch.state.snapshot import Snapshot  # noqa: E402
from drwatch.store import open_store  # noqa: E402

REPORT_HEIGHT = 2000  # px of the report shown (its top: summary, the first assets)


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="drwatch-shots-") as tmp_name:
        tmp = Path(tmp_name)
        cfg_path = tmp / "drwatch.yaml"
        cfg_path.write_text(yaml.safe_dump(estate_config(tmp, assets=5)))
        cfg = load_config(str(cfg_path))
        store = open_store(cfg)
        await store.open()
        try:
            await record_estate(store, time.time(), "0a1b2c3d4e5f", assets=5, results=600)
            snap = Snapshot.from_state(cfg, await store.load_state())
        finally:
            await store.close()
        report = tmp / "report.html"
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "drwatch", "report", "-c", str(cfg_path),
                                                    "--since", "30d", "--format", "html", "--out", str(report))
        if await proc.wait() != 0:
            raise SystemExit("drwatch report failed")

        async def reload() -> tuple[bool, list[str]]:
            return True, []

        server = HttpServer(AppState(cfg, snap, ProcessState(time.time()), ready=True), reload)
        await server.start("127.0.0.1", 0)
        try:
            async with browser() as chrome:
                shot = await chrome.render(file_url(report), width=1200, height=REPORT_HEIGHT, screenshot=True,
                                           max_height=REPORT_HEIGHT)
                page = await chrome.render(f"http://127.0.0.1:{server.port}/", width=390, height=844, mobile=True,
                                           screenshot=True, max_height=2400)
        finally:
            await server.stop()
    for name, rendered in (("report.png", shot), ("status-page.png", page)):
        if rendered.console or len(rendered.requests) != 1:
            raise SystemExit(f"{name}: console {rendered.console}, requests {rendered.requests}")
        (out / name).write_bytes(rendered.screenshot)
        print(f"{out / name}: {len(rendered.screenshot) // 1024} KiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    asyncio.run(main(Path(args.out)))
