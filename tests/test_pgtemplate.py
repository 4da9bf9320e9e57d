"""Throwaway clusters copied from an initdb template (drwatch.validators.postgres.pgtemplate), on real
PostgreSQL: the copy replaces initdb, every cluster gets its own password, a damaged template is replaced."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from drwatch.core.errors import ValidatorError
from drwatch.validators.postgres import pgcluster, pgtools
from drwatch.validators.postgres.orphans import stop_postmaster
from drwatch.validators.postgres.pgcluster import EphemeralCluster
from drwatch.validators.postgres.pgtemplate import PREFIX

NEEDED = ("initdb", "pg_ctl", "postgres")


@pytest.fixture
def root() -> Iterator[Path]:
    """A sandbox root the ``postgres`` user can reach (pytest's tmp dirs are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="drw-tpl-", dir="/tmp"))
    base.chmod(0o755)
    (base / "sandboxes").mkdir()
    yield base / "sandboxes"
    for pid_file in base.glob("sandboxes/*/pg/data/postmaster.pid"):
        stop_postmaster(pid_file)
    shutil.rmtree(base, ignore_errors=True)


def cluster(root: Path, name: str) -> EphemeralCluster:
    sandbox = root / f"drwatch-sbx-{name}"
    sandbox.mkdir()
    run_as = pgcluster.sandbox_user(None)
    if run_as is not None:
        pgcluster.open_sandbox_for(sandbox, run_as)
    return EphemeralCluster(pgtools.find_bin_dir(None, NEEDED), sandbox / "pg", run_as, templates=root)


def templates(root: Path) -> list[Path]:
    return sorted(root.glob(f"{PREFIX}*"))


async def can_connect(c: EphemeralCluster, password: str) -> bool:
    try:
        conn = await pgtools.connect({**c.params(), "password": password}, code="x", what="sandbox")
    except ValidatorError:
        return False
    try:
        return bool(await conn.fetchval("SELECT 1") == 1)
    finally:
        await pgtools.close_connection(conn)


async def test_a_second_cluster_is_a_copy_with_its_own_password(root: Path) -> None:
    """The first cluster runs initdb and leaves the template (readable by drwatch's user only); the next one
    copies it (no initdb) and starts with its own random password: the template's, which the first cluster
    was made with, no longer opens it. A temporary copy left by a process that died while saving is removed."""
    stale = root / f".{PREFIX}0123abcd-0123456789abcdef.999999999.tmp"
    stale.mkdir()
    first = cluster(root, "a")
    await first.init(limit=300)
    assert not stale.exists()
    assert not first.copied
    [template] = templates(root)
    assert (template / "data" / "PG_VERSION").is_file()
    assert (template / "password").read_text().strip() == first.password
    assert os.stat(template).st_mode & 0o077 == 0 and os.stat(template / "password").st_mode & 0o077 == 0

    second = cluster(root, "b")
    try:
        await second.init(limit=300)
        assert second.copied
        await second.start(limit=120)
        assert second.password != first.password
        assert await can_connect(second, second.password)
        assert not await can_connect(second, first.password)
    finally:
        await second.stop()
    assert templates(root) == [template]  # reused, not duplicated


async def test_a_damaged_template_is_replaced_by_initdb(root: Path) -> None:
    """A template whose copy does not start (its control file lost) is removed, and that cluster runs initdb
    and starts anyway; the drill is not the template's victim."""
    first = cluster(root, "a")
    await first.init(limit=300)
    [template] = templates(root)
    (template / "data" / "global" / "pg_control").unlink()

    second = cluster(root, "b")
    try:
        await second.init(limit=300)
        assert second.copied
        await second.start(limit=120)
        assert not second.copied  # initdb ran after the copy failed to start
        assert await can_connect(second, second.password)
    finally:
        await second.stop()
    assert not template.exists()
