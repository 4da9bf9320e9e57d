"""The README works as written: its quick start runs on Debian's own Python in a clean HOME, its test command is
what CI runs, its example configs are valid, it stays an entry point (size), and no relative link is dead."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from tests.support.helpers import REPO, after_this_second, run_cli, sample_files, write_config, write_tree
from tests.support.s3helpers import until, upload
from tests.support.s3servers import moto_server

README = REPO / "README.md"
SYSTEM_PYTHON = Path("/usr/bin/python3")
DEMO_PORT = 10099  # the demo's listen address is fixed (127.0.0.1:10099); the README names it
README_MAX_BYTES = 12_500
# Debian's default PATH without /usr/local: nothing but the system's python3 may answer to `python3`.
CLEAN_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
INSTALL_TIMEOUT = 900.0  # venv + `pip install .` from PyPI on a cold cache takes minutes on a busy CI machine


def _marked_block(text: str, marker: str, lang: str) -> str:
    """The fenced block that directly follows `<!-- marker -->`; exactly one such marker."""
    found = re.findall(rf"^<!-- {re.escape(marker)} -->\n```{lang}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    assert len(found) == 1, f"README.md needs exactly one `<!-- {marker} -->` followed by a ```{lang} block"
    return str(found[0])


def _clean_copy(dest: Path) -> Path:
    """The checkout as a clone would have it: files git knows (tracked or not ignored), as they are on disk;
    no build outputs, virtual environments or caches."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=False)
    assert listed.returncode == 0, f"the quick-start test copies the git checkout: {listed.stderr.decode()}"
    for rel in sorted(set(listed.stdout.decode().split("\0")) - {""}):
        src = REPO / rel
        if not src.is_file() or src.is_symlink():  # deleted in the working tree, or a submodule
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def _clean_env(home: Path) -> dict[str, str]:
    """A new user's login: fresh HOME, no XDG_* overrides, no Python/virtualenv/pyenv/drwatch settings, the
    system PATH. Proxy, locale and pip's machine-wide settings (index, certificates) stay: they are the host's."""
    dropped = ("XDG_", "PYENV", "PYTHON", "VIRTUAL_ENV", "CONDA", "DRWATCH_", "PIP_USER", "PIP_TARGET", "PIP_PREFIX")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(dropped) and k not in {"INVOCATION_ID", "NOTIFY_SOCKET", "STATE_DIRECTORY",
                                                      "CACHE_DIRECTORY", "CREDENTIALS_DIRECTORY"}}
    env.update(HOME=str(home), PATH=CLEAN_PATH, SHELL="/bin/bash", TERM="xterm")
    return env


def _get(path: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{DEMO_PORT}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


class _Terminal:
    """A pseudo-terminal for the block's stdout and stderr, as a user at a shell has; everything it prints is
    collected by a reader thread."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        os.close(self.slave)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every writer has closed the slave side
                return
            if not data:
                return
            with self._lock:
                self._chunks.append(data)

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        self._thread.join(timeout=5)
        os.close(self.master)


def _drwatch_pids(pgid: int) -> list[int]:
    """Processes of the block's process group running `drwatch run`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pgid:
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        if any(a.endswith(b"/drwatch") or a == b"drwatch" for a in argv) and b"run" in argv:
            pids.append(int(proc.name))
    return pids


def _assert_port_free() -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemon binds: TIME_WAIT is no conflict
        try:
            s.bind(("127.0.0.1", DEMO_PORT))
        except OSError as exc:
            pytest.fail(f"127.0.0.1:{DEMO_PORT} (the demo's port) is in use ({exc.strerror}): stop whatever listens "
                        "there (another `drwatch run`?) and rerun")


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_readme_quick_start_runs_on_debians_own_python(tmp_path: Path) -> None:
    """The README's quick-start block, run as written by bash in a clean copy of the repository, a fresh empty
    HOME and Debian's /usr/bin/python3 (externally managed, PEP 668) first on PATH: the demo daemon comes up,
    says on the terminal where its metrics are, /-/ready and /metrics answer with drwatch's metrics, and SIGTERM
    ends it with exit status 0."""
    assert SYSTEM_PYTHON.exists(), "Debian's python3 (/usr/bin/python3) is missing: apt-get install python3"
    assert shutil.which("python3", path=CLEAN_PATH) == str(SYSTEM_PYTHON), "python3 on the clean PATH is not Debian's"
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", "import ensurepip, sys, sysconfig; "
                            "print(sys.prefix, sysconfig.get_path('stdlib'))"],
                           capture_output=True, text=True, check=False, env={"PATH": CLEAN_PATH})
    assert probe.returncode == 0, ("python3 -m venv needs ensurepip: apt-get install python3-venv "
                                   f"(scripts/test.sh installs it)\n{probe.stderr}")
    prefix, stdlib = probe.stdout.split()
    assert prefix == "/usr", f"/usr/bin/python3 is not the system's Python (prefix {prefix})"
    # The case the quick start must survive: `pip install` into the system Python is refused (PEP 668).
    assert (Path(stdlib) / "EXTERNALLY-MANAGED").exists(), f"no {stdlib}/EXTERNALLY-MANAGED: not Debian 12's Python"

    block = _marked_block(README.read_text(), "quickstart", "sh")
    assert "drwatch run" in block.splitlines()[-1], "the quick start ends by starting the daemon"
    home = tmp_path / "home"
    home.mkdir()
    checkout = _clean_copy(tmp_path / "drwatch")
    _assert_port_free()

    term = _Terminal()
    proc = subprocess.Popen(["/bin/bash", "-euo", "pipefail", "-c", block], cwd=checkout, env=_clean_env(home),
                            stdin=subprocess.DEVNULL, stdout=term.slave, stderr=term.slave, start_new_session=True)
    term.start()
    try:
        deadline = time.monotonic() + INSTALL_TIMEOUT
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = _get("/-/ready", timeout=2)
            except OSError:
                ready = None
            if ready and ready[0] == 200:
                break
            time.sleep(1)
        assert proc.poll() is None, f"the quick start exited with {proc.returncode}:\n{term.text()[-6000:]}"
        assert ready and ready[0] == 200, f"not ready within {INSTALL_TIMEOUT:.0f}s:\n{term.text()[-6000:]}"

        status, metrics = _get("/metrics")
        assert status == 200
        families = {line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE drwatch_")}
        assert {"drwatch_build_info", "drwatch_asset_compliant", "drwatch_validator_outcome"} <= families, families
        assert re.search(r'^drwatch_asset_compliant\{asset="model-weights"\} ', metrics, re.MULTILINE), metrics[:2000]
        # What the README promises the terminal shows, and where the demo estate lives.
        out = term.text()
        assert f"serving metrics on http://127.0.0.1:{DEMO_PORT}/metrics" in out, out[-4000:]
        assert (home / ".local" / "state" / "drwatch" / "demo" / "drwatch.yaml").is_file()
        assert (home / ".local" / "share" / "drwatch" / "venv" / "bin" / "drwatch").is_file()

        pids = _drwatch_pids(proc.pid)
        assert len(pids) == 1, f"expected one `drwatch run` in the block's process group, found {pids}"
        os.kill(pids[0], signal.SIGTERM)
        rc = proc.wait(timeout=60)  # bash ends with the status of its last command, `drwatch run`
        assert rc == 0, f"drwatch run exited {rc} after SIGTERM:\n{term.text()[-4000:]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        term.close()


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's test command is exactly what the CI entry point .ci/run executes."""
    block = _marked_block(README.read_text(), "test-command", "sh")
    assert block.strip() == "bash scripts/test.sh"
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == "exec bash scripts/test.sh", ci


@pytest.mark.parametrize("name", ["minimal.yaml", "s3-locked.yaml"])
def test_readme_configs_are_the_example_files_and_valid(name: str) -> None:
    """The README's minimal configurations are config/minimal.yaml and config/s3-locked.yaml word for word, and
    each passes `drwatch check-config` with exit status 0."""
    path = REPO / "config" / name
    assert _marked_block(README.read_text(), f"config/{name}", "yaml") == path.read_text()
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path}: OK" in result.stdout


def _check_json(config: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = run_cli("check", "--config", str(config), "--output", "json", env=env)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def _findings(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(r["validator"], f["code"], f["subject"]) for r in doc["results"] for f in r["findings"]}


def test_minimal_config_proves_a_real_copy_and_finds_a_missing_file(tmp_path: Path) -> None:
    """config/minimal.yaml, with its two paths pointed at real directories on two filesystems (the copy on
    /dev/shm, as a backup disk is another filesystem than production's): `drwatch check` proves the copy and
    calls the asset compliant (exit 0); a file of the recovery point deleted from the copy makes the run
    `failed` (exit 1)."""
    prod = tmp_path / "prod"
    files = write_tree(prod / "app", {**sample_files(5), "sub/readme.txt": b"restore me\n"})
    now = time.time()
    for path in files.rglob("*"):  # the recovery point (newest mtime) is 1 h old; the file deleted below older
        age = 7200 if path.name == "readme.txt" else 3600
        os.utime(path, (now - age, now - age))
    shm = Path("/dev/shm")
    assert shm.is_dir() and shm.stat().st_dev != tmp_path.stat().st_dev, (
        "this test needs /dev/shm as a filesystem other than the one holding pytest's tmp_path")
    backup = Path(tempfile.mkdtemp(prefix="drwatch-quickstart-", dir=shm))
    try:
        shutil.copytree(files, backup / "app")
        cfg = yaml.safe_load((REPO / "config" / "minimal.yaml").read_text())
        assert set(cfg["locations"]) == {"prod", "backup-disk"}
        cfg["locations"]["prod"]["path"] = str(prod)
        cfg["locations"]["backup-disk"]["path"] = str(backup)
        config = write_config(tmp_path / "drwatch.yaml", cfg)

        rc, doc = _check_json(config)
        assert rc == 0, doc
        assert doc["assets"]["app-data"]["compliant"] is True, doc["assets"]
        assert [r["outcome"] for r in doc["results"]] == ["ok"]

        (backup / "app" / "sub" / "readme.txt").unlink()
        rc, doc = _check_json(config)
        assert rc == 1, doc
        assert [r["outcome"] for r in doc["results"]] == ["failed"]
        assert ("replica", "missing_file", "backup-disk:sub/readme.txt") in _findings(doc), _findings(doc)
        assert doc["assets"]["app-data"]["compliant"] is False
    finally:
        shutil.rmtree(backup, ignore_errors=True)


def test_s3_locked_config_proves_a_locked_copy_and_finds_a_deleted_object(tmp_path: Path) -> None:
    """config/s3-locked.yaml against a real S3 endpoint (moto) holding its two buckets: production in
    eu-central-1, the vault in eu-west-1 with Object Lock and every object COMPLIANCE-locked for 30 days, each
    reached with its own profile. Only endpoint_url is added. `drwatch check` proves the copy (off-site by the
    observed region, immutable per object, the canary's delete refused) and calls the asset compliant; an object
    deleted from the vault (a delete marker) is `missing_file`, exit 1."""
    cfg = yaml.safe_load((REPO / "config" / "s3-locked.yaml").read_text())
    prod, vault = cfg["locations"]["prod-s3"], cfg["locations"]["vault-s3"]
    dumps = {f"orders-{day}.dump": os.urandom(4096 + day) for day in range(1, 4)}
    prefix = cfg["assets"]["orders-dumps"]["production"]["prefix"]
    with moto_server() as moto:
        s3 = moto.client()
        s3.create_bucket(Bucket=prod["bucket"], CreateBucketConfiguration={"LocationConstraint": prod["region"]})
        s3.create_bucket(Bucket=vault["bucket"], ObjectLockEnabledForBucket=True,
                         CreateBucketConfiguration={"LocationConstraint": vault["region"]})
        upload(moto, prod["bucket"], dumps, prefix=prefix, ChecksumAlgorithm="SHA256")
        after_this_second()  # the backup is written after production (S3 times have whole seconds)
        upload(moto, vault["bucket"], dumps, prefix=prefix, ChecksumAlgorithm="SHA256",
               ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until(30))
        for loc in cfg["locations"].values():
            loc["endpoint_url"] = moto.endpoint_url
        config = write_config(tmp_path / "drwatch.yaml", cfg)
        credentials = tmp_path / "aws-credentials"
        credentials.write_text(f"[{prod['profile']}]\naws_access_key_id = AKIDPRODUCTIONREAD\n"
                               "aws_secret_access_key = production-secret\n"
                               f"[{vault['profile']}]\naws_access_key_id = AKIDVAULTREAD\n"
                               "aws_secret_access_key = vault-secret\n")
        env = {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config")}

        rc, doc = _check_json(config, env)
        assert rc == 0, doc
        rules = doc["assets"]["orders-dumps"]["rules"]
        assert {rule: r["state"] for rule, r in rules.items()} == dict.fromkeys(
            ("copies", "media", "offsite", "immutable", "restore_errors"), "pass"), rules
        assert sorted((r["validator"], r["outcome"]) for r in doc["results"]) == [
            ("immutability_probe", "ok"), ("replica", "ok")]

        s3.delete_object(Bucket=vault["bucket"], Key=f"{prefix}orders-2.dump")
        rc, doc = _check_json(config, env)
        assert rc == 1, doc
        assert ("replica", "missing_file", "vault-s3:orders-2.dump") in _findings(doc), _findings(doc)
        assert doc["assets"]["orders-dumps"]["rules"]["copies"]["state"] == "fail"


def test_readme_is_an_entry_point() -> None:
    """README.md stays short (at most 12.5 KB); the details live in docs/."""
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (limit {README_MAX_BYTES}): move details to docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"^#{1,6} (.+?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = counts.get(slug, 0)
            counts[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)  # not in code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # nor in code spans
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


def test_relative_links_point_to_existing_files() -> None:
    """Every relative link in README.md and docs/*.md names a file or directory of the repository, and an anchor
    of a Markdown file (#section) names one of its headings."""
    pages = [README, *sorted((REPO / "docs").glob("*.md"))]
    dead = []
    checked = 0
    for page in pages:
        for link in _links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
                continue
            target, _, anchor = link.partition("#")
            dest = (page.parent / unquote(target)).resolve() if target else page
            checked += 1
            if not dest.exists() or REPO.resolve() not in (dest, *dest.parents):
                dead.append(f"{page.relative_to(REPO)}: {link}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                dead.append(f"{page.relative_to(REPO)}: {link} (no such heading)")
    assert checked > 20, "the link check found almost no links: is its pattern broken?"
    assert not dead, dead


def test_readme_links_the_runbooks_and_the_moved_docs() -> None:
    """The README links the runbooks and every page the details moved to."""
    links = {link.partition("#")[0] for link in _links(README)}
    for page in ("docs/runbooks.md", "docs/configuration.md", "docs/findings.md", "docs/metrics.md",
                 "docs/validators.md", "docs/s3.md", "docs/verification.md", "docs/drills.md",
                 "docs/deployment.md", "docs/operations.md", "docs/cli.md"):
        assert page in links, f"README.md does not link {page}"


def _command_lines(text: str) -> list[str]:
    """Shell lines of a Markdown text: each line of a code block (continuations joined, comments cut), and each
    code span (a span may wrap lines)."""
    lines = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        lines += [re.sub(r"(^|\s)#\s.*$", "", line) for line in block.replace("\\\n", " ").splitlines()]
    rest = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return lines + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", rest)]


@pytest.mark.parametrize("page", ["runbooks.md", "deployment.md"])
def test_service_commands_use_the_service_install(page: str) -> None:
    """Every drwatch command in the runbooks and the deployment guide is the service install's binary with the
    service's configuration, as deploy/systemd/drwatch.service starts it, and parses with drwatch's own
    command-line parser (complete: no missing arguments, no unknown options)."""
    from drwatch.cli.main import build_parser

    unit = (REPO / "deploy" / "systemd" / "drwatch.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+) run --config (\S+)$", unit, flags=re.MULTILINE)
    assert exec_start, "ExecStart= of the unit changed shape"
    binary, config = exec_start.groups()
    text = (REPO / "docs" / page).read_text()
    if page == "runbooks.md":
        assert f"CFG={config}\n" in text, "the runbooks' CFG is not the unit's configuration"
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names = "|".join(sorted(subparsers.choices, key=len, reverse=True))
    commands = []
    for line in _command_lines(text):
        for m in re.finditer(rf"(\S*)drwatch\s+(?=(?:{names})(?![\w-]))", line):
            assert m.group(0).startswith(f"{binary} "), f"{page}: `{line.strip()}` does not call {binary}"
        commands += [p.strip() for p in re.split(r"\|\||&&|[|;]", line) if p.strip().startswith(f"{binary} ")]
    assert len(commands) >= (30 if page == "runbooks.md" else 2), commands
    for command in commands:
        # `[--validator V]` is synopsis for an optional part: checked without it
        argv = shlex.split(re.sub(r"\s\[[^\]]*\]", "", command).replace("$CFG", config))[1:]
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page}: `{command}` is not a valid drwatch command line")
        if getattr(args, "config", None) is not None or args.command in {"check", "status", "attest", "golden", "ack"}:
            assert args.config == config, f"{page}: `{command}` does not name the service's configuration"
