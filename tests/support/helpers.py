"""Shared test helpers: configs written to disk, small estates of real files, daemon subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


def write_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def backdate(root: Path, seconds: float = 60.0) -> Path:
    """Date every file under ``root`` ``seconds`` into the past: production written before its backup was
    taken. S3 times have whole seconds, so a copy written in the same second as production cannot tell which
    came first (drwatch then judges the copy behind, not corrupt); tests of corruption make the order plain."""
    when = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (when, when))
    return root


def after_this_second() -> None:
    """Sleep into the next whole second: what is written next has a later S3 LastModified than what came before."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def sample_files(n: int = 20, size: int = 4096, seed: int = 1) -> dict[str, bytes]:
    import random

    rng = random.Random(seed)
    out = {}
    for i in range(n):
        sub = f"dir{i % 3}/" if i % 2 else ""
        out[f"{sub}file-{i:04d}.bin"] = rng.randbytes(size + i)
    return out


def basic_config(
    tmp: Path,
    *,
    store: Mapping[str, Any] | None = None,
    copies: int = 2,
    every: str = "1h",
    sites: tuple[str, ...] = ("dc-a", "dc-b", "dc-c", "dc-d"),
    http_port: int | None = None,
    extra_assets: Mapping[str, Any] | None = None,
    manifest: str | None = None,
    validator: Mapping[str, Any] | None = None,
    rpo: str = "7d",
) -> dict[str, Any]:
    """A config with one asset 'data' whose production is tmp/prod/data and copies tmp/copyN/data."""
    locations: dict[str, Any] = {"prod": {"kind": "filesystem", "path": str(tmp / "prod"), "site": sites[0]}}
    asset_copies = []
    for i in range(1, copies + 1):
        locations[f"copy{i}"] = {"kind": "filesystem", "path": str(tmp / f"copy{i}"), "site": sites[i % len(sites)]}
        asset_copies.append({"location": f"copy{i}", "prefix": "data"})
    asset: dict[str, Any] = {
        "rpo": rpo,
        "rto": "1h",
        "production": {"location": "prod", "prefix": "data"},
        "copies": asset_copies,
        "validators": [dict(validator or {"kind": "replica", "schedule": {"every": every}})],
    }
    if manifest is not None:
        asset["manifest"] = manifest
    cfg: dict[str, Any] = {
        "store": dict(store or {"sqlite": str(tmp / "state.sqlite")}),
        "http": {"listen": f"127.0.0.1:{http_port if http_port is not None else 0}"},
        "locations": locations,
        "assets": {"data": asset, **(extra_assets or {})},
    }
    return cfg


def populate(tmp: Path, copies: int = 2, files: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
    files = dict(files or sample_files())
    write_tree(tmp / "prod" / "data", files)
    for i in range(1, copies + 1):
        write_tree(tmp / f"copy{i}" / "data", files)
    return files


def drwatch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "drwatch", *args]


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(drwatch_cmd(*args), capture_output=True, text=True, timeout=timeout, env=full_env,
                          check=False)


class DaemonProcess:
    """A real `drwatch run` subprocess."""

    def __init__(self, config: Path, port: int, env: Mapping[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.config = config
        self.port = port
        self.log_path = log_path or config.with_suffix(".log")
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True, timeout: float = 30) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(drwatch_cmd("run", "--config", str(self.config)), stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        if wait_ready:
            self.wait_ready(timeout)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 5) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def post(self, path: str, timeout: float = 10) -> tuple[int, str]:
        req = urllib.request.Request(self.url(path), method="POST", data=b"")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"drwatch exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/-/ready", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"drwatch not ready after {timeout}s:\n{self.log()}")

    def wait_for(self, predicate: Any, timeout: float = 30, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"condition not met in {timeout}s (last={last!r}):\n{self.log()[-4000:]}")

    def metrics(self) -> str:
        return self.get("/metrics")[1]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._close_log()
        return int(self.proc.returncode)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text exposition (None if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def sparse_file(path: Path, size: int) -> Path:
    """A sparse file of ``size`` bytes (reads as zeros; costs no disk space)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def read_json_lines(text: str) -> list[dict[str, Any]]:
    """Parse each line of a JSON-lines log (raises on a line that is not a JSON object)."""
    import json

    out = []
    for line in text.splitlines():
        if line.strip():
            doc = json.loads(line)
            assert isinstance(doc, dict), line
            out.append(doc)
    return out


class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd's ``$NOTIFY_SOCKET``.

    The path lives in a short directory under /tmp (socket paths are limited to 108 bytes).
    Every datagram is kept as ``(monotonic receive time, {KEY: VALUE})``.
    """

    def __init__(self) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="drw-sd-", dir="/tmp"))
        self.path = self.dir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[tuple[float, dict[str, str]]] = []

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def receive(self, timeout: float) -> bool:
        """Receive at most one datagram within ``timeout``; True if one arrived."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        fields = dict(line.partition("=")[::2] for line in data.decode().split("\n") if line)
        self.messages.append((time.monotonic(), fields))
        return True

    def collect(self, seconds: float) -> None:
        """Keep receiving for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.receive(left)

    def wait_for(self, key: str, value: str = "1", start: int = 0, timeout: float = 30) -> int:
        """Index of the first message at or after ``start`` with ``key=value``; waits for it to arrive."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.messages)):
                if self.messages[i][1].get(key) == value:
                    return i
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value} after message {start} in {timeout}s: "
                                     f"{[m for _, m in self.messages[start:]]}")
            self.receive(left)

    def close(self) -> None:
        import shutil

        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ServerProcess:
    """A server started in its own session (``start_new_session=True``) writing to ``log_path``: ``stop()``
    terminates it (its session killed after 10 s), ``log()`` is what it wrote so far."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class PrometheusServer(ServerProcess):
    """A real Prometheus (``/usr/bin/prometheus``) on a free loopback port with a temporary TSDB."""

    def __init__(self, workdir: Path, targets: list[str], scrape_interval: str = "1s",
                 binary: str = "/usr/bin/prometheus", scrape_overrides: list[dict[str, Any]] | None = None,
                 rule_files: list[str] | None = None) -> None:
        """``scrape_overrides``: one scrape job per entry (its ``job_name``, ``scheme``, ``tls_config``,
        ``basic_auth``...), each scraping ``targets``; default one plain job named ``drwatch``. ``rule_files``:
        alerting/recording rule files Prometheus evaluates (``ALERTS`` then shows pending and firing alerts)."""
        self.rule_files = list(rule_files or [])
        self.workdir = workdir
        self.jobs = scrape_overrides or [{"job_name": "drwatch"}]
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.binary = binary
        self.port = 0
        super().__init__(workdir / "prometheus.log")

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{**job, "static_configs": [{"targets": self.targets}]} for job in self.jobs],
            **({"rule_files": self.rule_files} if self.rule_files else {}),
        }))
        self.port = free_port()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query through the HTTP API; [] while Prometheus is not up yet."""
        import json
        import urllib.parse

        url = f"http://127.0.0.1:{self.port}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                doc = json.load(resp)
        except OSError:
            return []
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def wait_query(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.25)
        raise AssertionError(f"no result for {expr!r} within {timeout}s:\n{self.log()[-3000:]}")


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append(int(proc.name))
    return found
