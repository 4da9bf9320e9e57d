"""End to end, with real servers: drwatch on the demo estate, Prometheus with the shipped rules, Alertmanager with
the shipped routing tree. A flipped byte in a DR copy pages the data owners, the repair resolves the page, and a
restart of drwatch pages nobody."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helpers import REPO, DaemonProcess, PrometheusServer, ServerProcess, free_port, run_cli

RULES = REPO / "deploy" / "prometheus" / "drwatch.rules.yml"
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
ASSET = "model-weights"
VICTIM = Path("sites/dc-b/backup/model-weights/model-00001-of-00002.safetensors")
MAX_AGE = 20  # model-weights' validator: short, so that never-succeeded/stale could fire inside the test window
BLIND_ALERTS = "DrwatchValidatorNeverSucceeded|DrwatchValidatorStale"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status) == 200
    except (OSError, urllib.error.HTTPError):
        return False


def _wait(what: str, predicate: Callable[[], Any], timeout: float, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout}s\n{logs()[-6000:]}")


class Webhook:
    """An Alertmanager webhook receiver on loopback that records every notification: (path, payload)."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        lock = self.lock = threading.Lock()
        notifications = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    notifications.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def alerts(self, path: str, since: int = 0) -> list[tuple[int, str, dict[str, Any]]]:
        """(notification index, alert status, alert) for every alert notified to ``path`` from index ``since``."""
        with self.lock:
            got = list(enumerate(self.notifications))[since:]
        return [(i, alert["status"], alert) for i, (p, doc) in got if p == path for alert in doc["alerts"]]

    def count(self) -> int:
        with self.lock:
            return len(self.notifications)

    def dump(self) -> str:
        with self.lock:
            return json.dumps([(p, [(a["status"], a["labels"]) for a in d["alerts"]]) for p, d in self.notifications],
                              indent=1)


class Alertmanager(ServerProcess):
    """A real Alertmanager (Debian's) on a free loopback port, no clustering, temporary storage."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config = config
        self.port = free_port()
        super().__init__(workdir / "alertmanager.log")

    def start(self, timeout: float = 20) -> None:
        assert os.access(ALERTMANAGER_BIN, os.X_OK), f"{ALERTMANAGER_BIN} is missing: run scripts/ops-deps.sh"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "alertmanager.yml"
        config.write_text(yaml.safe_dump(self.config, sort_keys=False))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [ALERTMANAGER_BIN, f"--config.file={config}", f"--storage.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait("alertmanager ready", lambda: self._alive() and _http_ok(self.url("/-/ready")), timeout, self.log)

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"alertmanager exited with {self.proc.returncode}:\n{self.log()}")
        return True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class RulesPrometheus(PrometheusServer):
    """PrometheusServer running the shipped example config (deploy/prometheus/prometheus.yml) with its rules,
    every interval 1 s, the drwatch target and a local Alertmanager."""

    def __init__(self, workdir: Path, targets: list[str], alertmanager: str) -> None:
        super().__init__(workdir, targets, scrape_interval="1s")
        self.alertmanager = alertmanager

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        doc = yaml.safe_load(PROMETHEUS_YML.read_text())
        doc["global"] = {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval}
        doc["rule_files"] = [str(RULES)]
        doc["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [self.alertmanager]}]}]}
        [job] = doc["scrape_configs"]
        job["scrape_interval"] = self.scrape_interval
        job["static_configs"] = [{"targets": self.targets}]
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.port = free_port()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 20) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            return _http_ok(f"http://127.0.0.1:{self.port}/-/ready")

        _wait("prometheus ready", ready, timeout, self.log)


def alertmanager_config(webhook_port: int) -> dict[str, Any]:
    """The shipped Alertmanager config, its receivers pointed at the local webhook (path = receiver name), its
    timers shortened to seconds; routes and inhibitions unchanged."""
    doc: dict[str, Any] = yaml.safe_load(ALERTMANAGER_YML.read_text())
    assert {r["name"] for r in doc["receivers"]} == {"data-owners", "platform"}
    doc["receivers"] = [{"name": r["name"], "webhook_configs": [
        {"url": f"http://127.0.0.1:{webhook_port}/{r['name']}", "send_resolved": True}]} for r in doc["receivers"]]

    def shorten(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "1h")):
            if key in route or route is doc["route"]:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child)

    shorten(doc["route"])
    return doc


@pytest.fixture
def demo_config(tmp_path: Path) -> Path:
    """`drwatch demo` with every validator every 2 s (jitter 1 s), model-weights' max age 20 s, http on a free
    port."""
    demo = tmp_path / "demo"
    result = run_cli("demo", "--dir", str(demo))
    assert result.returncode == 0, result.stderr
    cfg_path = demo / "drwatch.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    data["http"]["listen"] = f"127.0.0.1:{free_port()}"
    for name, asset in data["assets"].items():
        for validator in asset["validators"]:
            validator["schedule"] = {"every": "2s", "jitter": "1s"}
            if name == ASSET:
                validator["max_age"] = f"{MAX_AGE}s"
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg_path


@pytest.fixture
def stack(tmp_path: Path, demo_config: Path) -> Iterator[tuple[DaemonProcess, RulesPrometheus, Webhook]]:
    """drwatch, Alertmanager (with the webhook) and Prometheus, all on loopback; always stopped."""
    port = int(yaml.safe_load(demo_config.read_text())["http"]["listen"].rsplit(":", 1)[1])
    daemon = DaemonProcess(demo_config, port)
    with Webhook() as hook:
        alertmanager = Alertmanager(tmp_path / "alertmanager", alertmanager_config(hook.port))
        prometheus = RulesPrometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"],
                                     f"127.0.0.1:{alertmanager.port}")
        try:
            daemon.start()
            alertmanager.start()
            prometheus.start()
            prometheus.wait_ready()
            yield daemon, prometheus, hook
        finally:
            prometheus.stop()
            alertmanager.stop()
            if daemon.proc is not None:
                daemon.stop()


def _flip_byte(path: Path) -> bytes:
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return original


def _value(prometheus: PrometheusServer, expr: str) -> float | None:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.timeout(180)
def test_bad_dr_copy_pages_data_owners_and_a_restart_pages_nobody(
        stack: tuple[DaemonProcess, RulesPrometheus, Webhook]) -> None:
    """A same-size corruption of one file in model-weights' DR copy reaches the data owners' webhook as a
    critical DrwatchBackupBad for asset model-weights within seconds; repairing the file sends `resolved`;
    after SIGTERM and a restart of drwatch on the same port, no new alert fires for model-weights and no
    never-succeeded or stale alert fires (not even pending) while the new process outlives the max age."""
    daemon, prometheus, hook = stack
    started = time.monotonic()

    def logs() -> str:
        return (f"--- webhook\n{hook.dump()}\n--- drwatch\n{daemon.log()[-3000:]}\n--- prometheus\n"
                f"{prometheus.log()[-2000:]}")

    # 1. model-weights compliant, seen by Prometheus, no alert about it
    _wait("model-weights compliant in Prometheus",
          lambda: _value(prometheus, f'drwatch_asset_compliant{{asset="{ASSET}"}}') == 1
          and _value(prometheus, f'drwatch_validator_outcome{{asset="{ASSET}",outcome="ok"}}') == 1, 30, logs)
    # (before the first run its rules were unknown: DrwatchRuleUnknown was pending, and goes away)
    _wait("no alert about model-weights", lambda: prometheus.query(f'ALERTS{{asset="{ASSET}"}}') == [], 10, logs)

    # 2. fault: one byte of a DR-copy file flipped (same size)
    victim = daemon.config.parent / VICTIM
    original = _flip_byte(victim)
    fault_at = time.monotonic()
    page = _wait("DrwatchBackupBad page at the data-owners webhook", lambda: [
        a for _, status, a in hook.alerts("/data-owners")
        if status == "firing" and a["labels"]["alertname"] == "DrwatchBackupBad" and a["labels"]["asset"] == ASSET],
        25, logs)[0]
    paged_after = time.monotonic() - fault_at
    assert page["labels"]["severity"] == "critical"
    assert page["labels"]["route"] == "data-owners"
    assert page["annotations"]["runbook_url"] == "docs/runbooks.md#drwatchbackupbad"
    assert not [a for _, _, a in hook.alerts("/platform") if a["labels"].get("asset") == ASSET]

    # 3. repair: the page resolves
    victim.write_bytes(original)
    repaired_at = time.monotonic()
    _wait("resolved notification for the page", lambda: [
        a for _, status, a in hook.alerts("/data-owners")
        if status == "resolved" and a["labels"]["alertname"] == "DrwatchBackupBad"
        and a["labels"]["asset"] == ASSET], 25, logs)
    resolved_after = time.monotonic() - repaired_at
    _wait("no model-weights alert left in Prometheus",
          lambda: prometheus.query(f'ALERTS{{asset="{ASSET}",alertstate="firing"}}') == [], 10, logs)

    # 4. SIGTERM and start again on the same port
    old_start = _value(prometheus, "drwatch_start_time_seconds")
    assert old_start is not None
    mark = hook.count()
    assert daemon.stop() == 0
    daemon.start()
    new_start = _wait("Prometheus scrapes the new process",
                      lambda: _value(prometheus, f"drwatch_start_time_seconds > {old_start}"), 30, logs)
    last_run_at_restart = _value(
        prometheus, f'drwatch_validator_last_run_timestamp_seconds{{asset="{ASSET}"}}')
    window_end = time.monotonic() + MAX_AGE + 8  # the max age plus several evaluations of the `for:`-less check
    firing_mw: list[Any] = []
    blind: list[Any] = []
    while time.monotonic() < window_end:
        firing_mw += prometheus.query(f'ALERTS{{asset="{ASSET}",alertstate="firing"}}')
        blind += prometheus.query(f'ALERTS{{alertname=~"{BLIND_ALERTS}"}}')
        time.sleep(0.5)
    assert prometheus.proc is not None and prometheus.proc.poll() is None, prometheus.log()
    assert firing_mw == [], firing_mw
    assert blind == [], blind
    after_restart = hook.alerts("/data-owners", mark) + hook.alerts("/platform", mark)
    assert not [a for _, status, a in after_restart
                if status == "firing" and a["labels"].get("asset") == ASSET], hook.dump()
    assert not [a for _, _, a in after_restart if a["labels"]["alertname"] in BLIND_ALERTS.split("|")]
    # the window meant something: the new process outlived the max age and kept proving model-weights
    uptime = _value(prometheus, "time() - drwatch_start_time_seconds")
    assert uptime is not None and uptime > MAX_AGE, (uptime, new_start)
    assert _value(prometheus, f'drwatch_validator_outcome{{asset="{ASSET}",outcome="ok"}}') == 1
    last_run = _value(prometheus, f'drwatch_validator_last_run_timestamp_seconds{{asset="{ASSET}"}}')
    assert last_run is not None and last_run_at_restart is not None and last_run > last_run_at_restart
    print(f"\npaged {paged_after:.1f}s after the fault, resolved {resolved_after:.1f}s after the repair, "
          f"test body {time.monotonic() - started:.1f}s")
