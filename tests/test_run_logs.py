"""Logs an operator can act on: each run that did not prove its check (``failed``, ``error``, ``timeout``) is one
warning line naming its asset, validator, outcome, duration and first findings (``code:subject``, bounded, file
names escaped); ``ok`` runs stay at info, except the first to show a new set of warning findings. Under
systemd the lines carry a ``<N>`` priority prefix that journald
turns into the entry's priority, so ``journalctl -u drwatch -p warning`` shows every problem: tested against a
real systemd-journald (a private journal namespace) fed the way systemd feeds a service's stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drwatch.core.logs import printable
from tests.support.helpers import (
    DaemonProcess,
    basic_config,
    drwatch_cmd,
    free_port,
    populate,
    read_json_lines,
    write_config,
    write_tree,
)

JOURNALD = Path("/lib/systemd/systemd-journald")
EVIL = 'evil\n{"event": "forged", "level": "info"}\x1b[2J.bin'  # a crafted file name in production


def _estate(tmp: Path, port: int) -> dict[str, Any]:
    """Three assets, one validator each: ``data`` is fine, ``broken`` has a copy that lost files (``failed``),
    ``gone`` has its only copy on a location that is not mounted (``error``)."""
    populate(tmp)
    lost = {f"lost-{i:02d}.bin": b"x" * (100 + i) for i in range(7)}
    write_tree(tmp / "prod" / "broken", {"kept.bin": b"kept", EVIL: b"evil", **lost})
    write_tree(tmp / "copy1" / "broken", {"kept.bin": b"kept"})
    write_tree(tmp / "prod" / "gone", {"a.bin": b"a"})
    replica = {"kind": "replica", "schedule": {"every": "1h", "jitter": "1s"}}
    cfg = basic_config(tmp, http_port=port, validator=replica, extra_assets={
        "broken": {"rpo": "7d", "production": {"location": "prod", "prefix": "broken"},
                   "copies": [{"location": "copy1", "prefix": "broken"}], "validators": [replica]},
        "gone": {"rpo": "7d", "production": {"location": "prod", "prefix": "gone"},
                 "copies": [{"location": "unmounted", "prefix": "gone"}], "validators": [replica]},
    })
    cfg["locations"]["unmounted"] = {"kind": "filesystem", "path": str(tmp / "not-mounted"), "site": "dc-z"}
    return cfg


def _finished(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("event") == "run_finished":
            assert e["asset"] not in out, f"two runs of {e['asset']}: {events}"
            out[e["asset"]] = e
    return out


def _check_ok_run(data: dict[str, Any]) -> bool:
    """The ok run names its warning findings (copies on production's disk here: same_failure_domain) and, as the
    first run to show them, is at warning; without any it would be at info. Returns whether it had some."""
    assert data["outcome"] == "ok", data
    problems = data.get("problems", [])
    assert all(p.split(":")[0] in ("same_failure_domain", "volatile_media") for p in problems), data
    assert data["level"] == ("warning" if problems else "info"), data
    return bool(problems)


def _check_bad_runs(finished: dict[str, dict[str, Any]]) -> None:
    broken, gone = finished["broken"], finished["gone"]
    assert (broken["validator"], broken["outcome"]) == ("replica", "failed"), broken
    assert (gone["validator"], gone["outcome"]) == ("replica", "error"), gone
    for e in (broken, gone):
        assert isinstance(e["duration"], float) and len(e["run_id"]) == 32, e
    # bounded: the first 5 findings by code:subject, the rest counted
    assert len(broken["problems"]) == 5 and broken["problems_more"] == broken["findings"] - 5 >= 3, broken
    assert all(p.startswith("missing_file:copy1:") for p in broken["problems"]), broken
    assert "location_unavailable:unmounted" in gone["problems"] and gone["problems_more"] == 0, gone


def test_bad_runs_are_one_warning_line_each_with_codes_and_subjects(tmp_path: Path) -> None:
    """A real daemon on an estate with a failing and an erroring asset writes exactly one warning line per bad
    run (asset, validator, outcome, duration, ``code:subject`` of the first 5 findings and a count of the
    rest); the ok run is at info. A stderr that is not the journal (JOURNAL_STREAM names another stream)
    gets no priority prefix: every line stays JSON."""
    port = free_port()
    path = write_config(tmp_path / "drwatch.yaml", _estate(tmp_path, port))
    daemon = DaemonProcess(path, port, env={"JOURNAL_STREAM": "1:2"})
    try:
        daemon.start()
        daemon.wait_for(lambda: daemon.log().count('"run_finished"') >= 3)
    finally:
        assert daemon.stop() == 0
    events = read_json_lines(daemon.log())
    finished = _finished(events)
    assert set(finished) == {"data", "broken", "gone"}
    ok = _check_ok_run(finished["data"])
    _check_bad_runs(finished)
    about_runs = [e for e in events if e["level"] != "info" and e.get("asset")]
    assert sorted((e["event"], e["asset"], e["level"]) for e in about_runs) == [
        ("run_finished", "broken", "warning"), *([("run_finished", "data", "warning")] if ok else []),
        ("run_finished", "gone", "warning")], about_runs


def test_a_crafted_file_name_cannot_forge_a_log_line(tmp_path: Path) -> None:
    """A file name with a newline, a fake JSON record and a terminal escape shows up escaped in the problems
    of the warning line (one line; the console format too), never as a line of its own."""
    port = free_port()
    data = _estate(tmp_path, port)
    data["assets"] = {"broken": data["assets"]["broken"]}
    data["logging"] = {"format": "console"}
    path = write_config(tmp_path / "drwatch.yaml", data)
    for fmt in ("json", "console"):
        data["logging"]["format"] = fmt
        write_config(path, data)
        (tmp_path / "state.sqlite").unlink(missing_ok=True)
        daemon = DaemonProcess(path, port, log_path=tmp_path / f"{fmt}.log")
        try:
            daemon.start()
            daemon.wait_for(lambda d=daemon: "run_finished" in d.log())
        finally:
            assert daemon.stop() == 0
        log = daemon.log()
        assert "\x1b" not in log, log
        [line] = [line for line in log.splitlines() if "run_finished" in line]
        assert [line] == [x for x in log.splitlines() if "forged" in x], log  # the name stays inside its line
        if fmt == "json":
            assert f"missing_file:copy1:{printable(EVIL)}" in json.loads(line)["problems"], line
        else:
            assert repr(f"missing_file:copy1:{printable(EVIL)}") in line, line  # a list, as Python prints it


def test_printable_escapes_and_bounds() -> None:
    """Subjects in log fields: control and bidi characters escaped, cut at the limit with a mark."""
    assert printable("a\nb\x1b[0m\u202ec") == "a\\nb\\x1b[0m\\u202ec"
    assert printable("x" * 300) == "x" * 200 + "..."
    assert printable("ok/name.bin") == "ok/name.bin"


# --------------------------------------------------------------------------- the journal


@pytest.fixture
def journal() -> Iterator[str]:
    """A real systemd-journald serving a private namespace (its own sockets and files, removed afterwards)."""
    assert JOURNALD.exists(), "systemd-journald is needed (Debian's systemd package)"
    assert os.geteuid() == 0, "systemd-journald runs as root (CI and these containers do)"
    namespace = f"drwtest{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([str(JOURNALD), namespace], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runtime = Path(f"/run/systemd/journal.{namespace}")
    try:
        deadline = time.monotonic() + 10
        while not (runtime / "stdout").exists():
            assert proc.poll() is None, f"journald exited: {proc.stderr.read() if proc.stderr else ''!r}"
            assert time.monotonic() < deadline, "journald did not open its stdout socket"
            time.sleep(0.05)
        yield namespace
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
        machine = Path("/etc/machine-id").read_text().strip()
        for where in (runtime, Path(f"/var/log/journal/{machine}.{namespace}"),
                      Path(f"/run/log/journal/{machine}.{namespace}")):
            shutil.rmtree(where, ignore_errors=True)


def _journal_stream(namespace: str, identifier: str) -> socket.socket:
    """A stream connected to journald the way systemd connects a service's stdout/stderr (StandardError=journal,
    SyslogLevelPrefix=yes, the defaults of deploy/systemd/drwatch.service)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(f"/run/systemd/journal.{namespace}/stdout")
    sock.shutdown(socket.SHUT_RD)
    # identifier, unit id, default priority (info), level prefix, forward to syslog, kmsg, console
    sock.sendall(f"{identifier}\n\n6\n1\n0\n0\n0\n".encode())
    return sock


def _journal(namespace: str, identifier: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["journalctl", f"--namespace={namespace}", "-t", identifier, "-o", "json", "--no-pager",
                          *args], capture_output=True, text=True, timeout=30, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_journalctl_priority_warning_shows_every_bad_run(tmp_path: Path, journal: str) -> None:
    """The daemon's stderr connected to a real journald like systemd does it: ``journalctl -p warning`` shows
    exactly one entry per bad run (its JSON line, the prefix stripped), the ok run is at priority info."""
    port = free_port()
    path = write_config(tmp_path / "drwatch.yaml", _estate(tmp_path, port))
    identifier = "drwatch-test"
    sock = _journal_stream(journal, identifier)
    st = os.fstat(sock.fileno())
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    proc = subprocess.Popen(drwatch_cmd("run", "--config", str(path)), stdout=sock.fileno(),
                            stderr=sock.fileno(), env=env, start_new_session=True)
    sock.close()
    try:
        deadline = time.monotonic() + 60
        while len([e for e in _journal(journal, identifier) if '"run_finished"' in e.get("MESSAGE", "")]) < 3:
            assert proc.poll() is None, f"drwatch exited {proc.returncode}: {_journal(journal, identifier)}"
            assert time.monotonic() < deadline, _journal(journal, identifier)
            time.sleep(0.3)
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    entries = _journal(journal, identifier)
    events = [{**json.loads(e["MESSAGE"]), "PRIORITY": int(e["PRIORITY"])} for e in entries]
    assert all(e["PRIORITY"] == {"debug": 7, "info": 6, "warning": 4, "error": 3}[e["level"]] for e in events), events
    finished = _finished(events)
    assert finished["data"]["PRIORITY"] == (4 if _check_ok_run(finished["data"]) else 6)
    _check_bad_runs(finished)
    shown = [json.loads(e["MESSAGE"]) for e in _journal(journal, identifier, "-p", "warning")]
    bad_runs = [e for e in shown if e["event"] == "run_finished" and e["outcome"] != "ok"]
    assert sorted((e["asset"], e["outcome"]) for e in bad_runs) == [("broken", "failed"), ("gone", "error")], shown


def test_an_ok_runs_warnings_reach_the_warning_level_when_they_change() -> None:
    """An ok run with warning findings is logged at warning the first time its codes appear (and when they
    change), then at info while they stay the same: `journalctl -p warning` shows a copy going behind or a
    clock running ahead once, not on every run of a live estate. Info findings are never named."""
    from structlog.testing import capture_logs

    from drwatch.core.model import Finding, Outcome, Result, Severity
    from drwatch.engine.runlog import log_finished as _log_finished

    def result(*findings: Finding) -> Result:
        return Result(run_id="r", asset="a", validator="v", kind="replica", outcome=Outcome.OK, started_at=0.0,
                      finished_at=1.0, findings=findings)

    behind = Finding(Severity.WARNING, "copy_behind", "older", "copy1")
    info = Finding(Severity.INFO, "production_changed_since_seal", "live", "production")
    future = Finding(Severity.WARNING, "time_in_future", "2099", "production")
    with capture_logs() as logs:
        warned = _log_finished(result(behind, info), None, True, None)
        warned = _log_finished(result(behind, info), None, True, warned)
        warned = _log_finished(result(behind, future), None, True, warned)
        warned = _log_finished(result(info), None, True, warned)
        warned = _log_finished(result(behind), None, True, warned)
    levels = [entry["log_level"] for entry in logs]
    assert levels == ["warning", "info", "warning", "info", "warning"], logs
    assert logs[0]["problems"] == ["copy_behind:copy1"]  # the info finding is counted, not named
    assert "problems" not in logs[3]
