"""A copy is another place holding its own bytes, observed on every run: hard links to production's files,
a copy directory swapped for a symlink to production while drwatch runs, and S3 endpoints spelled two
ways are not copies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drwatch.config.model import Config, parse_config
from drwatch.core.errors import ConfigError
from drwatch.core.model import CopyState, Outcome, Result
from drwatch.storage.config import canonical_endpoint
from tests.support.helpers import (
    DaemonProcess,
    basic_config,
    free_port,
    metric_value,
    populate,
    write_config,
    write_tree,
)
from tests.support.runs import open_runner
from tests.support.s3helpers import bucket, upload
from tests.support.s3servers import MotoServer, s3_client


async def run_twice(tmp: Path, cfg: Config, between: Any = None) -> tuple[Result, Result]:
    """Two runs of the replica validator by one runner on one loaded config (the daemon between two
    scheduled runs); ``between()`` changes the estate in the meantime."""
    async with open_runner(cfg, tmp / "sandboxes") as runner:
        first = await runner.execute("data", cfg.assets["data"].validators[0])
        if between is not None:
            between()
        second = await runner.execute("data", cfg.assets["data"].validators[0])
        return first, second


def load(tmp: Path, cfg_dict: dict[str, Any]) -> Config:
    return parse_config(yaml.safe_dump(cfg_dict), source=str(tmp / "drwatch.yaml"))


def state(result: Result, name: str) -> CopyState:
    return next(c.state for c in result.copies if c.copy == name)


def findings(result: Result, code: str) -> list[str]:
    return [f"{f.subject}: {f.message}" for f in result.findings if f.code == code]


def hardlink_tree(src: Path, dst: Path) -> None:
    """``cp -al``: the same inodes under another directory."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)


async def test_hardlinked_copy_is_no_copy(tmp_path: Path) -> None:
    """A copy made of hard links to production's files (same device and inode) holds no second copy of the
    bytes: ``copy_is_hardlink`` names it, its files count as missing, it fails; production and the real copy
    stay verified."""
    files = populate(tmp_path, copies=2)
    shutil.rmtree(tmp_path / "copy1" / "data")
    hardlink_tree(tmp_path / "prod" / "data", tmp_path / "copy1" / "data")
    cfg = load(tmp_path, basic_config(tmp_path))
    result, _ = await run_twice(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    linked = findings(result, "copy_is_hardlink")
    assert len(linked) == 1 and linked[0].startswith("copy1: ") and f"{len(files)} file(s)" in linked[0], linked
    assert "production's own files" in linked[0]
    assert state(result, "copy1") == CopyState.FAILED
    assert next(c for c in result.copies if c.copy == "copy1").objects["missing"] == len(files)
    assert state(result, "copy2") == CopyState.VERIFIED
    assert state(result, "production") == CopyState.VERIFIED


async def test_one_hardlinked_file_among_real_copies(tmp_path: Path) -> None:
    """A single file of a copy that is production's inode (the rest real copies) is that copy's defect: the
    file counts missing, named in the finding."""
    files = populate(tmp_path, copies=2)
    victim = sorted(files)[2]
    (tmp_path / "copy2" / "data" / victim).unlink()
    os.link(tmp_path / "prod" / "data" / victim, tmp_path / "copy2" / "data" / victim)
    result, _ = await run_twice(tmp_path, load(tmp_path, basic_config(tmp_path)))
    assert result.outcome == Outcome.FAILED
    linked = findings(result, "copy_is_hardlink")
    assert len(linked) == 1 and linked[0].startswith("copy2: 1 file(s)") and victim in linked[0], linked
    assert [f.subject for f in result.findings if f.code == "missing_file"] == [f"copy2:{victim}"]
    assert state(result, "copy1") == CopyState.VERIFIED



async def test_hardlink_to_production_under_another_name(tmp_path: Path) -> None:
    """Two production files with the same bytes; the copy's ``b.bin`` is a hard link to production's ``a.bin``
    (another name): its content matches, yet it is production's inode. Found by the peer's multiply-linked
    inodes: ``copy_is_hardlink``, ``b.bin`` missing, the copy fails."""
    same = b"identical bytes" * 300
    populate(tmp_path, copies=2, files={"a.bin": same, "b.bin": same, "c.txt": b"other"})
    (tmp_path / "copy1" / "data" / "b.bin").unlink()
    os.link(tmp_path / "prod" / "data" / "a.bin", tmp_path / "copy1" / "data" / "b.bin")
    result, _ = await run_twice(tmp_path, load(tmp_path, basic_config(tmp_path)))
    linked = findings(result, "copy_is_hardlink")
    assert len(linked) == 1 and linked[0].startswith("copy1: 1 file(s)") and "b.bin" in linked[0], linked
    assert [f.subject for f in result.findings if f.code == "missing_file"] == ["copy1:b.bin"]
    assert state(result, "copy1") == CopyState.FAILED
    assert state(result, "copy2") == CopyState.VERIFIED

async def test_hardlink_to_another_copy(tmp_path: Path) -> None:
    """A copy whose files are the inodes of an earlier copy is that copy again: the later one fails."""
    populate(tmp_path, copies=2)
    shutil.rmtree(tmp_path / "copy2" / "data")
    hardlink_tree(tmp_path / "copy1" / "data", tmp_path / "copy2" / "data")
    result, _ = await run_twice(tmp_path, load(tmp_path, basic_config(tmp_path)))
    linked = findings(result, "copy_is_hardlink")
    assert len(linked) == 1 and linked[0].startswith("copy2: ") and "copy 'copy1''s own files" in linked[0], linked
    assert state(result, "copy1") == CopyState.VERIFIED
    assert state(result, "copy2") == CopyState.FAILED


async def test_hard_links_inside_a_copy_are_fine(tmp_path: Path) -> None:
    """Hard links between a copy's own files (rsnapshot, ``--link-dest`` generations) are not production's
    inodes: the copy stays verified, no finding."""
    files = {"a.bin": b"same bytes" * 100, "b.bin": b"same bytes" * 100, "c.txt": b"other"}
    populate(tmp_path, copies=1, files=files)
    (tmp_path / "copy1" / "data" / "b.bin").unlink()
    os.link(tmp_path / "copy1" / "data" / "a.bin", tmp_path / "copy1" / "data" / "b.bin")
    generation = tmp_path / "copy1" / "older"
    hardlink_tree(tmp_path / "copy1" / "data", generation)  # nlink 3 for a.bin/b.bin, 2 for c.txt
    result, _ = await run_twice(tmp_path, load(tmp_path, basic_config(tmp_path, copies=1)))
    assert result.outcome == Outcome.OK, result.findings
    assert not findings(result, "copy_is_hardlink")
    assert state(result, "copy1") == CopyState.VERIFIED


async def test_copy_swapped_for_symlink_to_production_while_running(tmp_path: Path) -> None:
    """The config loaded with a real copy directory; between two runs the directory is replaced by a symlink
    to production. The second run resolves the copy's root again: ``copy_aliases_production``, the copy
    fails (it was ``ok`` forever when the alias check ran only at load)."""
    populate(tmp_path, copies=2)
    cfg = load(tmp_path, basic_config(tmp_path))

    def swap() -> None:
        shutil.rmtree(tmp_path / "copy1" / "data")
        (tmp_path / "copy1" / "data").symlink_to(tmp_path / "prod" / "data", target_is_directory=True)

    first, second = await run_twice(tmp_path, cfg, swap)
    assert first.outcome == Outcome.OK, first.findings
    assert second.outcome == Outcome.FAILED
    alias = findings(second, "copy_aliases_production")
    assert len(alias) == 1 and alias[0].startswith("copy1: ") and "production's directory" in alias[0], alias
    assert state(second, "copy1") == CopyState.FAILED
    assert state(second, "copy2") == CopyState.VERIFIED
    assert state(second, "production") == CopyState.VERIFIED
    # The same config is refused when loaded now: the load-time check and the run-time check agree.
    with pytest.raises(ConfigError, match="production itself"):
        load(tmp_path, basic_config(tmp_path))


async def test_copy_location_swapped_for_symlink_to_another_copy(tmp_path: Path) -> None:
    """A whole copy location replaced by a symlink to another copy's location is that copy again."""
    populate(tmp_path, copies=2)
    cfg = load(tmp_path, basic_config(tmp_path))

    def swap() -> None:
        shutil.rmtree(tmp_path / "copy2")
        (tmp_path / "copy2").symlink_to(tmp_path / "copy1", target_is_directory=True)

    first, second = await run_twice(tmp_path, cfg, swap)
    assert first.outcome == Outcome.OK, first.findings
    alias = findings(second, "copy_aliases_production")
    assert len(alias) == 1 and alias[0].startswith("copy2: ") and "copy 'copy1'" in alias[0], alias
    assert state(second, "copy2") == CopyState.FAILED
    assert state(second, "copy1") == CopyState.VERIFIED


# --- S3 endpoints ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000/"),
    ("http://localhost:9000", "http://127.0.0.1:9000"),
    ("http://[::1]:9000/", "http://LOCALHOST:9000"),
    ("https://S3.Example.COM", "https://s3.example.com:443/"),
    ("http://minio.lan", "http://minio.lan:80"),
    ("https://minio.lan:443", "http://minio.lan:443"),
    (None, "https://s3.amazonaws.com"),
    ("https://s3.us-east-1.amazonaws.com", "https://s3.amazonaws.com/"),
    ("https://s3.eu-west-1.amazonaws.com", "https://s3-eu-west-1.amazonaws.com"),
    ("https://s3.dualstack.eu-west-1.amazonaws.com", None),
])
def test_endpoint_spellings_of_one_service_are_one(a: str | None, b: str | None) -> None:
    """Scheme, host case, default port, trailing slash, loopback names and regional vs global AWS endpoints
    are spellings, not places."""
    assert canonical_endpoint(a) == canonical_endpoint(b)


@pytest.mark.parametrize(("a", "b"), [
    ("http://127.0.0.1:9000", "http://127.0.0.1:9001"),
    ("http://127.0.0.1:9000", "http://127.0.0.2:9000"),  # another loopback socket
    ("http://minio-a.lan", "http://minio-b.lan"),
    ("https://minio.lan", "http://minio.lan"),  # :443 and :80: two services
    ("https://s3.amazonaws.com", "https://s3.cn-north-1.amazonaws.com.cn"),
    ("https://storage.example.com/s3", "https://storage.example.com/other"),
])
def test_different_services_stay_different(a: str, b: str) -> None:
    assert canonical_endpoint(a) != canonical_endpoint(b)


def _s3_location(moto: MotoServer, endpoint: str, bucket_name: str, site: str) -> dict[str, Any]:
    return {"kind": "s3", "bucket": bucket_name, "endpoint_url": endpoint, "region": moto.region,
            "addressing_style": "path", "site": site, "access_key_id_env": "DRW_ID_AK",
            "secret_access_key_env": "DRW_ID_SK"}


def test_one_bucket_named_two_ways_is_refused(tmp_path: Path, moto: MotoServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Two locations naming one bucket on one moto server with ``http://127.0.0.1:PORT`` and
    ``http://localhost:PORT/`` are one place: what one spelling writes the other reads, and the config is
    refused like any other alias (it counted as two copies: immutable 2/1)."""
    monkeypatch.setenv("DRW_ID_AK", moto.access_key)
    monkeypatch.setenv("DRW_ID_SK", moto.secret_key)
    name = bucket(moto, "alias")
    upload(moto, name, {"a.txt": b"one place"})
    port = moto.endpoint_url.rsplit(":", 1)[1].rstrip("/")
    spelled = f"http://localhost:{port}/"
    other = s3_client(spelled, moto.access_key, moto.secret_key, moto.region)
    assert other.get_object(Bucket=name, Key="data/a.txt")["Body"].read() == b"one place"

    write_tree(tmp_path / "prod" / "data", {"a.txt": b"one place"})
    cfg: dict[str, Any] = {
        "store": {"sqlite": str(tmp_path / "state.sqlite")},
        "locations": {
            "prod": {"kind": "filesystem", "path": str(tmp_path / "prod"), "site": "dc-a"},
            "s3-a": _s3_location(moto, f"http://127.0.0.1:{port}", name, "dc-b"),
            "s3-b": _s3_location(moto, spelled, name, "dc-c"),
        },
        "assets": {"data": {
            "rpo": "1d", "production": {"location": "prod", "prefix": "data"},
            "copies": [{"location": "s3-a", "prefix": "data"}, {"location": "s3-b", "prefix": "data/"}],
            "validators": [{"kind": "replica"}],
        }},
    }
    with pytest.raises(ConfigError) as err:
        load(tmp_path, cfg)
    problems = [f"{p.path}: {p.message}" for p in err.value.problems]
    assert problems == [f"assets.data.copies[1]: is the same place as copy 's3-a' "
                        f"(loopback:{port}/{name}/data): a copy must be another place"], problems
    # Another bucket on the same server is another place.
    cfg["locations"]["s3-b"]["bucket"] = bucket(moto, "alias-other")
    assert load(tmp_path, cfg).assets["data"].copies[1].location == "s3-b"


def test_running_daemon_sees_the_copy_become_production(tmp_path: Path) -> None:
    """A real ``drwatch run`` checking every second: ``ok`` while the copy is a directory of its own; once the
    directory is replaced by a symlink to production, the next run fails with ``copy_aliases_production`` and
    the copies rule fails; a reload of the same file is refused (the load-time check agrees) and the daemon
    keeps running and keeps failing the copy."""
    populate(tmp_path, copies=2)
    port = free_port()
    cfg = basic_config(tmp_path, every="1s", http_port=port)
    cfg["compliance"] = {"media": 1, "immutable": 0, "offsite": 0}
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    daemon = DaemonProcess(path, port)
    try:
        daemon.start()
        outcome = {"asset": "data", "validator": "replica"}
        daemon.wait_for(lambda: metric_value(daemon.metrics(), "drwatch_validator_outcome", **outcome,
                                             outcome="ok") == 1)
        shutil.rmtree(tmp_path / "copy1" / "data")
        (tmp_path / "copy1" / "data").symlink_to(tmp_path / "prod" / "data", target_is_directory=True)
        daemon.wait_for(lambda: metric_value(daemon.metrics(), "drwatch_validator_outcome", **outcome,
                                             outcome="failed") == 1)
        status = json.loads(daemon.get("/api/v1/status")[1])
        [res] = [r for r in status["results"] if r["asset"] == "data"]
        assert {(f["code"], f["subject"]) for f in res["findings"]} >= {("copy_aliases_production", "copy1")}
        rules = status["assets"]["data"]["rules"]
        assert rules["copies"]["state"] == "fail" and "copy1: latest check found it bad" in rules["copies"]["detail"]
        daemon.signal(signal.SIGHUP)
        daemon.wait_for(lambda: metric_value(daemon.metrics(), "drwatch_config_last_reload_successful") == 0)
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert "production itself" in daemon.log()
    finally:
        assert daemon.stop() == 0



@pytest.fixture
def copy1_bound_to_production(tmp_path: Path) -> Iterator[Path]:
    """tmp/copy1/data is a bind mount of tmp/prod/data (needs root, as the fault matrix's tmpfs does; CI runs
    as root); unmounted afterwards."""
    populate(tmp_path, copies=2)
    target = tmp_path / "copy1" / "data"
    shutil.rmtree(target)
    target.mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "prod" / "data"), str(target)], check=True,
                   capture_output=True, timeout=30)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True, timeout=30)


async def test_copy_bind_mounted_from_production(tmp_path: Path, copy1_bound_to_production: Path) -> None:
    """A bind mount of production's directory on the copy's path: another path (the config loads: realpaths
    differ), the same directory (device and inode). Caught on the run: the copy fails."""
    cfg = load(tmp_path, basic_config(tmp_path))
    result, _ = await run_twice(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    alias = findings(result, "copy_aliases_production")
    assert len(alias) == 1 and alias[0].startswith("copy1: ") and "production's directory" in alias[0], alias
    assert state(result, "copy1") == CopyState.FAILED
    assert state(result, "copy2") == CopyState.VERIFIED
