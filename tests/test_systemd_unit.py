"""deploy/systemd/drwatch.service: systemd accepts it without a warning, its exposure stays at or below 2.0, the
sandbox it declares fits what drwatch does (system calls, no writable+executable memory), and drwatch, started
with the environment systemd gives such a unit, keeps its state, sandboxes and secrets where the unit says.

``systemd-analyze verify`` and ``systemd-analyze security --offline=yes`` need no running systemd. The system
call check traces a real daemon with strace (``scripts/ops-ui-deps.sh`` installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drwatch.config.model import LimitsConfig
from drwatch.core.durations import parse_duration
from drwatch.core.sandbox import OWNER, PREFIX
from tests.support.helpers import (
    REPO,
    DaemonProcess,
    NotifySocket,
    basic_config,
    drwatch_cmd,
    free_port,
    metric_value,
    populate,
    read_json_lines,
    write_config,
)

UNIT = REPO / "deploy" / "systemd" / "drwatch.service"
MAX_EXPOSURE = 2.0
# sandbox.py bounds each sandbox removal at 60 s (shielded) after the drain.
SANDBOX_REMOVAL_BOUND_S = 60.0
# System calls the traced test process makes only because it runs as root (CI and these containers do):
# SQLite chowns a new WAL/journal file to the database's owner only when euid is 0 (robustFchown). The
# service's transient user never makes it; were it refused, SystemCallErrorNumber=EPERM makes it fail
# harmlessly (SQLite ignores the result).
ROOT_ONLY_SYSCALLS = {"fchown"}


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; repeated keys stay repeated."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def _values(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in _directives(UNIT.read_text()) if s == section and k == key]


def _one(key: str, section: str = "Service") -> str:
    values = _values(key, section)
    assert len(values) == 1, (key, values)
    return values[0]


def _drwatch_executable() -> str:
    """The `drwatch` console script of the interpreter running the tests (what /opt/drwatch/bin/drwatch is)."""
    beside = Path(sys.executable).with_name("drwatch")
    found = str(beside) if beside.is_file() else shutil.which("drwatch")
    assert found, "the drwatch console script is not installed (pip install -e .)"
    return found


def _unit_copy(directory: Path, extra: str = "") -> Path:
    """The unit with its /opt/drwatch/bin/drwatch commands pointing at the installed drwatch."""
    text = UNIT.read_text()
    assert "/opt/drwatch/bin/drwatch " in text
    text = text.replace("/opt/drwatch/bin/drwatch ", _drwatch_executable() + " ")
    if extra:
        text = text.replace("[Service]\n", f"[Service]\n{extra}\n", 1)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "drwatch.service"
    path.write_text(text)
    return path


def _verify(unit: Path) -> tuple[int, list[str]]:
    """Exit status of `systemd-analyze verify` and the lines of its output that concern this unit."""
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          check=False, cwd=unit.parent)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    return done.returncode, lines


def test_systemd_analyze_verify_reports_nothing(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit (its ExecStart= pointing at the installed drwatch) exits 0 and prints
    no warning about it; the same unit with an unknown key does get a warning, so the check can fail."""
    rc, lines = _verify(_unit_copy(tmp_path / "ok"))
    assert (rc, lines) == (0, [])

    rc, lines = _verify(_unit_copy(tmp_path / "bad", extra="ProtectSystem=sometimes"))
    assert any("sometimes" in line for line in lines), lines


def test_security_exposure_is_at_most_2(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes --threshold=20` passes (the threshold is exposure x 10), and the
    overall exposure it prints is at most 2.0."""
    unit = _unit_copy(tmp_path)
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}",
                           str(unit)], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    match = re.search(r"Overall exposure level for drwatch\.service: ([0-9.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security: overall exposure {exposure}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert exposure <= MAX_EXPOSURE
    flagged = [line for line in done.stdout.splitlines() if line.startswith("✗")]
    # What stays exposed is what a network monitor needs, the host's root (backups are read on the host's
    # mounts), and the read access to the RTC that ProtectClock= itself adds.
    allowed = ("PrivateNetwork=", "IPAddressDeny=", "RestrictAddressFamilies=~AF_UNIX",
               "RestrictAddressFamilies=~AF_(INET|INET6)", "DeviceAllow=", "RootDirectory=/RootImage=")
    assert all(line[1:].split()[0] in allowed for line in flagged), flagged


def test_unit_declares_the_service_contract() -> None:
    """The unit is Type=notify with the watchdog, reload, restart and stop semantics drwatch implements, and
    TimeoutStopSec= leaves room for the default drain plus sandbox cleanup."""
    assert _one("Type") == "notify"
    assert _one("NotifyAccess") == "main"
    assert _one("KillMode") == "mixed"
    assert _one("Restart") == "on-failure"
    assert _one("RestartPreventExitStatus") == "78"
    assert _one("DynamicUser") == "yes"
    for key in ("StateDirectory", "CacheDirectory", "ConfigurationDirectory"):
        assert _one(key) == "drwatch"
    assert _one("UMask") == "0077"
    assert _one("ExecStart").split()[1:] == ["run", "--config", "/etc/drwatch/drwatch.yaml"]
    reload = _values("ExecReload")
    assert reload[-1] == "/bin/kill -HUP $MAINPID"
    assert reload[0].split()[1:] == ["check-config", "/etc/drwatch/drwatch.yaml"]
    watchdog = parse_duration(_one("WatchdogSec"))
    assert watchdog >= 10
    stop = parse_duration(_one("TimeoutStopSec"))
    drain = LimitsConfig().drain_timeout.total_seconds()
    assert stop > drain + SANDBOX_REMOVAL_BOUND_S, (stop, drain)
    assert set(_one("RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert _one("CapabilityBoundingSet") == "" and _one("AmbientCapabilities") == ""
    assert _values("SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    assert _one("MemoryDenyWriteExecute") == "yes"
    assert _one("ProcSubset") == "pid" and _one("ProtectProc") == "invisible"
    # Every credential has a name drwatch can be pointed at with a relative `*_file:` setting.
    creds = _values("LoadCredential")
    assert "drwatch-pg-dsn" in creds
    assert all(re.fullmatch(r"[a-z0-9.-]+", c) for c in creds), creds


def test_invalid_config_exits_78_which_the_unit_does_not_restart(tmp_path: Path) -> None:
    """`drwatch run` with an invalid configuration exits 78 at once (RestartPreventExitStatus=78 then stops the
    restart loop), and `drwatch check-config` (the unit's first ExecReload=) exits 78 too."""
    bad = write_config(tmp_path / "drwatch.yaml", {"store": {"sqlite": "x.sqlite"}, "bogus": 1})
    run = subprocess.run(drwatch_cmd("run", "--config", str(bad)), capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 78, run.stderr
    assert "bogus" in run.stderr
    check = subprocess.run(drwatch_cmd("check-config", str(bad)), capture_output=True, text=True, timeout=60,
                           check=False)
    assert check.returncode == 78, check.stderr


def test_credentials_example_matches_the_unit() -> None:
    """deploy/systemd/credentials.example is a valid configuration whose every `*_file:` secret is a credential
    the unit loads, and drwatch.env.example points AWS_SHARED_CREDENTIALS_FILE at a loaded credential."""
    example = REPO / "deploy" / "systemd" / "credentials.example"
    checked = subprocess.run(drwatch_cmd("check-config", str(example)), capture_output=True, text=True, timeout=60,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    loaded = set(_values("LoadCredential"))
    files = set(re.findall(r"^\s*\w+_file:\s*(\S+)\s*$", example.read_text(), re.MULTILINE))
    assert {"drwatch-pg-dsn", "drwatch-s3-secret-access-key"} <= files <= loaded, (files, loaded)
    env = (REPO / "deploy" / "systemd" / "drwatch.env.example").read_text()
    shared = re.search(r"AWS_SHARED_CREDENTIALS_FILE=/run/credentials/drwatch\.service/(\S+)", env)
    assert shared and shared.group(1) in loaded
    assert "EnvironmentFile" in UNIT.read_text() and _one("EnvironmentFile") == "-/etc/drwatch/drwatch.env"


# --------------------------------------------------------------------------- the environment systemd gives


def _systemd_env(tmp: Path, notify: NotifySocket) -> dict[str, str]:
    """What systemd sets for this unit: directories (created, mode 0700), credentials, notify socket."""
    env = {
        "STATE_DIRECTORY": str(tmp / "var-lib-drwatch"),
        "CACHE_DIRECTORY": str(tmp / "var-cache-drwatch"),
        "CONFIGURATION_DIRECTORY": str(tmp / "etc-drwatch"),
        "CREDENTIALS_DIRECTORY": str(tmp / "run-credentials"),
        **notify.env(watchdog_usec=2_000_000),
    }
    for key in ("STATE_DIRECTORY", "CACHE_DIRECTORY", "CONFIGURATION_DIRECTORY", "CREDENTIALS_DIRECTORY"):
        Path(env[key]).mkdir(mode=0o700, parents=True, exist_ok=True)
    return env


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=10)
    return proc.pid


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


def test_state_in_state_directory_and_sandboxes_in_cache_directory(tmp_path: Path, notify: NotifySocket) -> None:
    """Without `store.sqlite`, drwatch keeps its SQLite store at $STATE_DIRECTORY/drwatch.sqlite (nothing beside
    the config), sweeps and creates restore sandboxes under $CACHE_DIRECTORY/sandboxes, and speaks sd_notify
    (READY=1, WATCHDOG=1) on $NOTIFY_SOCKET."""
    populate(tmp_path)
    env = _systemd_env(tmp_path, notify)
    port = free_port()
    data = basic_config(tmp_path, http_port=port, validator={"kind": "replica", "schedule": {"every": "1h",
                                                                                         "jitter": "200ms"}})
    del data["store"]
    config = write_config(Path(env["CONFIGURATION_DIRECTORY"]) / "drwatch.yaml", data)
    orphan = Path(env["CACHE_DIRECTORY"]) / "sandboxes" / f"{PREFIX}left-by-a-crash"
    orphan.mkdir(parents=True)
    (orphan / OWNER).write_text(str(_dead_pid()))
    (orphan / "restored.bin").write_bytes(b"x" * 1024)

    daemon = DaemonProcess(config, port, env=env, log_path=tmp_path / "drwatch.log")
    try:
        daemon.start()
        notify.wait_for("READY")
        notify.wait_for("WATCHDOG")
        daemon.wait_for(lambda: metric_value(daemon.metrics(), "drwatch_validator_outcome", asset="data",
                                             outcome="ok") == 1)
        assert daemon.stop() == 0
    finally:
        daemon.stop()

    state = Path(env["STATE_DIRECTORY"]) / "drwatch.sqlite"
    assert state.is_file() and state.stat().st_size > 0
    assert not (config.parent / "drwatch.sqlite").exists()
    assert not orphan.exists()
    events = [e for e in read_json_lines(daemon.log()) if e["event"] == "orphaned_sandboxes_removed"]
    assert [(e["count"], e["root"]) for e in events] == [(1, str(Path(env["CACHE_DIRECTORY"]) / "sandboxes"))]


def test_dsn_file_is_read_from_credentials_directory(tmp_path: Path, notify: NotifySocket, pg_server: Any) -> None:
    """`store: {postgres: {dsn_file: drwatch-pg-dsn}}` reads $CREDENTIALS_DIRECTORY/drwatch-pg-dsn (what
    LoadCredential=drwatch-pg-dsn provides) before a file of that name beside the config; results land in that
    PostgreSQL database, no SQLite file appears in $STATE_DIRECTORY, and the DSN is not logged."""
    populate(tmp_path)
    env = _systemd_env(tmp_path, notify)
    database = f"drwatch_creds_{os.getpid()}_{int(time.time())}"
    dsn = pg_server.create_database(database)
    credential = Path(env["CREDENTIALS_DIRECTORY"]) / "drwatch-pg-dsn"
    credential.write_text(dsn + "\n")
    credential.chmod(0o400)  # as systemd leaves it
    port = free_port()
    data = basic_config(tmp_path, http_port=port, store={"postgres": {"dsn_file": "drwatch-pg-dsn"}},
                        validator={"kind": "replica", "schedule": {"every": "1h", "jitter": "200ms"}})
    config = write_config(Path(env["CONFIGURATION_DIRECTORY"]) / "drwatch.yaml", data)
    # A decoy beside the config naming a database that does not exist: drwatch must not get that far.
    (config.parent / "drwatch-pg-dsn").write_text(pg_server.dsn("no_such_database") + "\n")

    daemon = DaemonProcess(config, port, env=env, log_path=tmp_path / "drwatch.log")
    try:
        daemon.start()
        notify.wait_for("READY")
        daemon.wait_for(lambda: metric_value(daemon.metrics(), "drwatch_validator_outcome", asset="data",
                                             outcome="ok") == 1)
        assert daemon.stop() == 0
    finally:
        daemon.stop()

    stored = pg_server.psql("SELECT count(*) FROM results WHERE asset = 'data'", database=database)
    assert int(stored) >= 1
    assert list(Path(env["STATE_DIRECTORY"]).iterdir()) == []
    assert dsn not in daemon.log()


# --------------------------------------------------------------------------- the sandbox fits drwatch


def _syscall_groups() -> dict[str, list[str]]:
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if not line.startswith(" "):
            current = groups.setdefault(item, [])
        elif current is not None:
            current.append(item)
    return groups


def _expand(groups: dict[str, list[str]], name: str) -> set[str]:
    found: set[str] = set()
    for item in groups[name]:
        found |= _expand(groups, item) if item.startswith("@") else {item}
    return found


def _filter_allows() -> set[str]:
    """System calls the unit's SystemCallFilter= lines let through (systemd adds @default to an allow list)."""
    groups = _syscall_groups()
    allowed: set[str] = set()
    for entry in _values("SystemCallFilter"):
        deny = entry.startswith("~")
        names: set[str] = set()
        for item in entry.removeprefix("~").split():
            names |= _expand(groups, item) if item.startswith("@") else {item}
        if deny:
            allowed -= names
        else:
            allowed |= names | _expand(groups, "@default")
    return allowed


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# Runs a command with the kernel's memory-deny-write-execute set (PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN;
# Linux 6.3+), which exec keeps: exit 75 when the kernel lacks it.
_MDWE = ("import ctypes, os, sys\n"
         "if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0: sys.exit(75)\n"
         "os.execvp(sys.argv[1], sys.argv[1:])")


def _under_mdwe(*argv: str) -> list[str]:
    return [sys.executable, "-c", _MDWE, *argv]


def test_drwatch_check_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """`drwatch check` reaches the same verdict (exit status, outcomes, rule states) in a process the kernel
    forbids writable-then-executable memory, as MemoryDenyWriteExecute= does (here through PR_SET_MDWE), as it
    does without."""
    if subprocess.run(_under_mdwe("true"), check=False, timeout=60).returncode == 75:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+); the strace test checks the same rule")
    populate(tmp_path)
    config = write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, copies=2))
    verdicts = []
    for argv in (_under_mdwe(*drwatch_cmd("check", "--config", str(config), "--output", "json")),
                 drwatch_cmd("check", "--config", str(config), "--output", "json")):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        doc = json.loads(done.stdout)
        verdicts.append((done.returncode, [r["outcome"] for r in doc["results"]],
                         {rule: v["state"] for rule, v in doc["assets"]["data"]["rules"].items()}))
    assert verdicts[0] == verdicts[1]
    assert verdicts[0][1] == ["ok"] and verdicts[0][2]["copies"] == "pass", verdicts[0]


# Runs a command with /proc as ProtectProc=invisible + ProcSubset=pid mount it (a private mount namespace).
_PROC_SUBSET_PID = 'mount -t proc -o subset=pid,hidepid=invisible proc /proc && exec "$@"'


def _under_proc_subset_pid(*argv: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _PROC_SUBSET_PID, "sh", *argv]


def _require_proc_subset_pid() -> None:
    probe = subprocess.run(_under_proc_subset_pid("test", "!", "-e", "/proc/stat"), capture_output=True, text=True,
                           timeout=60, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private /proc with subset=pid here (needs root and Linux 5.8+): "
                    f"{probe.stderr.strip()}")


def test_media_is_observed_with_proc_subset_pid(tmp_path: Path) -> None:
    """With /proc as ProcSubset=pid and ProtectProc=invisible leave it (no /proc/stat, no /proc/sys),
    /proc/self/mountinfo still tells drwatch the filesystem type: a copy declared `tape` on a local disk is
    observed as disk, exactly as without the restriction."""
    _require_proc_subset_pid()
    populate(tmp_path)
    data = basic_config(tmp_path, copies=2)
    data["locations"]["copy1"]["media"] = "tape"
    config = write_config(tmp_path / "drwatch.yaml", data)
    seen = []
    for argv in (_under_proc_subset_pid(*drwatch_cmd("check", "--config", str(config), "--output", "json")),
                 drwatch_cmd("check", "--config", str(config), "--output", "json")):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        [result] = json.loads(done.stdout)["results"]
        seen.append({c["copy"]: (c["media"], c["media_observed"]) for c in result["copies"]})
    assert seen[0] == seen[1]
    assert seen[0]["copy1"] == ("disk", True), seen[0]


def test_sandbox_sweep_detects_pid_reuse_with_proc_subset_pid(tmp_path: Path) -> None:
    """Under ProcSubset=pid, the start-up sweep still removes a sandbox whose owner PID now belongs to a process
    that started after the sandbox was made (PID reuse), as it does with a full /proc."""
    _require_proc_subset_pid()
    root = tmp_path / "sandboxes"
    sweep = ("import sys; from pathlib import Path; from drwatch.core.sandbox import SandboxManager; "
             "print(len(SandboxManager(Path(sys.argv[1])).sweep_orphans()))")
    newcomer = subprocess.Popen(["sleep", "60"])
    try:
        removed = []
        for wrap in (lambda *a: list(a), _under_proc_subset_pid):
            orphan = root / f"{PREFIX}reused"
            orphan.mkdir(parents=True)
            owner = orphan / OWNER
            owner.write_text(str(newcomer.pid))
            an_hour_ago = time.time() - 3600
            os.utime(owner, (an_hour_ago, an_hour_ago))  # made long before the process now holding that PID
            done = subprocess.run(wrap(sys.executable, "-c", sweep, str(root)), capture_output=True, text=True,
                                  timeout=60, check=True)
            removed.append(int(done.stdout))
            shutil.rmtree(orphan, ignore_errors=True)
    finally:
        newcomer.kill()
        newcomer.wait(timeout=10)
    assert removed == [1, 1]


class TracedDaemon(DaemonProcess):
    """`drwatch run` under `strace -f`; signals go to drwatch itself, not to strace."""

    def __init__(self, config: Path, port: int, trace: Path, **kwargs: Any) -> None:
        super().__init__(config, port, **kwargs)
        self.trace = trace

    def start(self, wait_ready: bool = True, timeout: float = 60) -> None:
        self._log = self.log_path.open("ab")
        strace = ["strace", "-f", "-qq", "-s", "0", "-o", str(self.trace)]
        self.proc = subprocess.Popen([*strace, *drwatch_cmd("run", "--config", str(self.config))], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        if wait_ready:
            self.wait_ready(timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        tracees = _children(self.proc.pid)
        assert len(tracees) == 1, tracees
        os.kill(tracees[0], sig)


@pytest.mark.skipif(sys.platform != "linux", reason="strace and seccomp are Linux")
def test_drwatch_stays_inside_the_system_call_filter_and_memory_policy(tmp_path: Path) -> None:
    """A real daemon, traced through start, runs, scrapes, a SIGHUP reload and a SIGTERM stop, makes only system
    calls the unit's SystemCallFilter= allows (@system-service minus @privileged and @resources), and never asks
    for memory MemoryDenyWriteExecute= refuses (mmap writable+executable, mprotect/pkey_mprotect adding
    PROT_EXEC, shmat SHM_EXEC)."""
    assert shutil.which("strace"), "strace is missing: run scripts/ops-ui-deps.sh"
    populate(tmp_path)
    port = free_port()
    data = basic_config(tmp_path, http_port=port, validator={"kind": "replica", "schedule": {"every": "1h",
                                                                                         "jitter": "200ms"}})
    config = write_config(tmp_path / "drwatch.yaml", data)
    trace = tmp_path / "strace.txt"
    notify = NotifySocket()
    daemon = TracedDaemon(config, port, trace, env=notify.env(watchdog_usec=1_000_000))
    try:
        daemon.start()
        notify.wait_for("READY")
        daemon.wait_for(lambda: metric_value(daemon.metrics(), "drwatch_validator_outcome", asset="data",
                                             outcome="ok") == 1, timeout=60)
        assert json.loads(daemon.get("/api/v1/status")[1])["results"]
        daemon.signal(signal.SIGHUP)
        notify.wait_for("RELOADING")
        daemon.signal(signal.SIGTERM)
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=60) == 0, daemon.log()[-3000:]
    finally:
        daemon.stop()
        notify.close()

    calls: set[str] = set()
    refused_memory: list[str] = []
    for line in trace.read_text(errors="replace").splitlines():
        match = re.match(r"^\d+\s+([a-z0-9_]+)\((.*)", line)
        if not match:
            continue
        name, args = match.groups()
        calls.add(name)
        executable = "PROT_EXEC" in args
        if ((name in ("mprotect", "pkey_mprotect") and executable)
                or (name == "mmap" and executable and "PROT_WRITE" in args)
                or (name == "shmat" and "SHM_EXEC" in args)):
            refused_memory.append(line)
    assert {"openat", "epoll_wait", "accept4", "sendto"} <= calls, sorted(calls)  # the trace is real
    outside = calls - _filter_allows() - ROOT_ONLY_SYSCALLS
    assert not outside, sorted(outside)
    assert not refused_memory, refused_memory[:10]
