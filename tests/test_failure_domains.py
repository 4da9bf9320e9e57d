"""Failure domains are observed, not only declared: a copy on production's disk (or mount source) is never
off-site, and a volatile filesystem (tmpfs) is no medium. Declarations that observation contradicts are
findings."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drwatch.config.model import Config, parse_config
from drwatch.core.model import Outcome, Result
from drwatch.state.compliance import RuleState, evaluate
from drwatch.storage.filesystem import mount_of
from drwatch.storage.sources import Facts
from drwatch.validators.copies.posture import dependencies
from tests.support.helpers import basic_config, populate, sample_files, write_tree
from tests.test_replica import run_replica

SHM = Path("/dev/shm")


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A directory on /dev/shm: a tmpfs, another device than the tests' disk (CI and the dev machines have it)."""
    assert os.path.ismount(SHM) and os.stat(SHM).st_dev != os.stat(Path.cwd()).st_dev, "/dev/shm must be a tmpfs"
    path = SHM / f"drwatch-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def verdict(cfg_dict: dict[str, Any], tmp: Path, result: Result) -> dict[str, tuple[RuleState, str]]:
    from drwatch.state.snapshot import Snapshot

    cfg: Config = parse_config(yaml.safe_dump(cfg_dict), source=str(tmp / "drwatch.yaml"))
    snap = Snapshot(cfg).with_result(result, time.time())
    rules = evaluate(cfg, snap, time.time())["data"].rules
    return {name: (v.state, v.detail) for name, v in rules.items()}


def messages(result: Result, code: str) -> dict[str, str]:
    return {f.subject: f.message for f in result.findings if f.code == code}


async def test_copies_on_production_disk_are_never_offsite(tmp_path: Path) -> None:
    """Two copies declared at other sites but on production's own disk (same ``st_dev``): each is named by
    ``same_failure_domain``, offsite fails although the declared sites differ; they still count as copies
    (their own bytes protect against deleted or corrupted production files) and the run is ok."""
    populate(tmp_path, copies=2)
    cfg = basic_config(tmp_path)
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    same = messages(result, "same_failure_domain")
    dev = os.stat(tmp_path).st_dev
    assert set(same) == {"copy1", "copy2"}, result.findings
    assert f"on production's device {os.major(dev)}:{os.minor(dev)}" in same["copy1"]
    assert all(c.dependencies == ("same_failure_domain",) for c in result.copies if c.role == "copy")
    rules = verdict(cfg, tmp_path, result)
    assert rules["offsite"][0] == RuleState.FAIL, rules["offsite"]
    assert "copy1 depends on production (same_failure_domain), not counted" in rules["offsite"][1]
    assert rules["copies"][0] == RuleState.PASS, rules["copies"]


async def test_copy_on_another_device_keeps_its_declared_site(tmp_path: Path, shm_dir: Path) -> None:
    """A copy on another device (here a tmpfs) is not in production's failure domain: its declared site
    makes it off-site. But tmpfs is volatile: ``volatile_media``, and it is no second medium."""
    files = sample_files(8)
    write_tree(tmp_path / "prod" / "data", files)
    write_tree(shm_dir / "data", files)
    cfg = basic_config(tmp_path, copies=1)
    cfg["locations"]["copy1"]["path"] = str(shm_dir)
    cfg["locations"]["copy1"]["media"] = "disk"  # declared, contradicted by what is observed
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert not messages(result, "same_failure_domain")
    assert "tmpfs" in messages(result, "volatile_media")["copy1"]
    assert "tmpfs (volatile)" in messages(result, "media_contradiction")["copy1"]
    report = next(c for c in result.copies if c.copy == "copy1")
    assert (report.media, report.media_observed, report.dependencies) == ("volatile", True, ())
    rules = verdict(cfg, tmp_path, result)
    assert rules["offsite"][0] == RuleState.PASS, rules["offsite"]
    assert rules["media"][0] == RuleState.FAIL, rules["media"]
    assert "1/2 media among verified copies (disk); volatile (not a medium): copy1" in rules["media"][1]


async def test_production_on_tmpfs_copy_on_disk(tmp_path: Path, shm_dir: Path) -> None:
    """The other way round: production on a tmpfs and a copy on disk are two devices; the copy is off-site by
    its declared site, production's tmpfs is flagged volatile."""
    populate(tmp_path, copies=1)
    write_tree(shm_dir / "data", sample_files())
    cfg = basic_config(tmp_path, copies=1)
    cfg["locations"]["prod"]["path"] = str(shm_dir)
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert set(messages(result, "volatile_media")) == {"production"}
    assert not messages(result, "same_failure_domain")
    assert verdict(cfg, tmp_path, result)["offsite"][0] == RuleState.PASS


def test_mount_source_is_read_from_mountinfo(tmp_path: Path) -> None:
    """The mount source (block device, NFS export, CIFS share) comes from mountinfo's field after the type;
    pseudo sources (tmpfs, overlay) name no failure domain."""
    dev = os.stat(tmp_path).st_dev
    devid = f"{os.major(dev)}:{os.minor(dev)}"
    (tmp_path / "nfs").mkdir()
    (tmp_path / "cifs").mkdir()
    (tmp_path / "tmp").mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"27 1 {devid} / / rw,relatime - ext4 /dev/vda1 rw\n"
        f"90 27 {devid} /vol/backups {tmp_path}/nfs rw,relatime shared:1 - nfs4 nas01:/vol/backups rw,vers=4.2\n"
        f"91 27 {devid} / {tmp_path}/cifs rw,relatime - cifs //filer/dr\\040share rw\n"
        f"92 27 {devid} / {tmp_path}/tmp rw,relatime - tmpfs tmpfs rw\n")
    root = mount_of(tmp_path, str(mountinfo))
    assert root is not None and (root.fstype, root.failure_source) == ("ext4", "/dev/vda1")
    nfs = mount_of(tmp_path / "nfs", str(mountinfo))
    assert nfs is not None and (nfs.fstype, nfs.failure_source, nfs.device) == ("nfs4", "nas01:/vol/backups", devid)
    cifs = mount_of(tmp_path / "cifs", str(mountinfo))
    assert cifs is not None and cifs.failure_source == "//filer/dr share"
    tmp = mount_of(tmp_path / "tmp", str(mountinfo))
    assert tmp is not None and (tmp.fstype, tmp.failure_source) == ("tmpfs", None)


@pytest.mark.parametrize(("copy", "prod", "same"), [
    (Facts(device="0:51", mount_source="nas01:/vol/backups"), Facts(device="0:50", mount_source="nas01:/vol/backups"),
     "mounted from production's source nas01:/vol/backups"),
    (Facts(device="8:1"), Facts(device="8:1"), "on production's device 8:1"),
    (Facts(device="0:51", mount_source="nas01:/vol/dr"), Facts(device="0:50", mount_source="NAS01:/vol/prod"),
     "on production's file server nas01 (nas01:/vol/dr; production NAS01:/vol/prod)"),
    (Facts(device="0:51", mount_source="//filer/dr"), Facts(device="0:50", mount_source="//filer/prod"),
     "on production's file server filer"),
    (Facts(device="0:51", mount_source="nas02:/vol/backups"), Facts(device="0:50", mount_source="nas01:/vol/backups"),
     None),
    (Facts(device="8:17", mount_source="/dev/sdb1"), Facts(device="8:1", mount_source="/dev/sda1"), None),
    (Facts(), Facts(), None),  # nothing observed (S3, or not reached): declarations decide
])
def test_same_failure_domain_from_observed_facts(copy: Facts, prod: Facts, same: str | None) -> None:
    """Two NFS mounts of one export, or two exports of one server, have two devices but die with the same
    server: same domain. Two disks, or two servers, are two domains."""
    deps, found = dependencies("dr", copy, prod)
    if same is None:
        assert deps == () and found == []
    else:
        assert deps == ("same_failure_domain",)
        assert [f.code for f in found] == ["same_failure_domain"] and same in found[0].message

