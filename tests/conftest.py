"""Fixtures shared by all tests: real PostgreSQL, moto and Ceph RGW servers (session), store backends,
event-loop guard."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pgserver import PostgresServer
from tests.support.s3helpers import Locations
from tests.support.s3servers import CephRGW, MotoServer, ceph_rgw, moto_server

_counter = iter(range(1, 1_000_000))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server (Debian's), started once per session on a free loopback port."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def rgw() -> Iterator[CephRGW]:
    """One throwaway Ceph RGW for the whole session (exact Object Lock semantics); ~4 s to start.

    Tests that stop it must ``restart()`` it in a ``finally`` (data survives a restart)."""
    with ceph_rgw() as server:
        yield server


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """A moto S3 server (us-east-1) for the whole session. Never stop it: a restarted moto is empty."""
    with moto_server("us-east-1") as server:
        yield server


@pytest.fixture
def locs(monkeypatch: pytest.MonkeyPatch) -> Locations:
    """The locations of a test's config, their credentials in the environment (see Locations)."""
    return Locations(monkeypatch)


@pytest.fixture
def sandbox_root() -> Iterator[Path]:
    """A sandbox root the ``postgres`` user can reach (pytest's tmp dirs are private to root): drills that run
    PostgreSQL servers as ``postgres`` put their sandboxes here."""
    base = Path(tempfile.mkdtemp(prefix="drw-sbx-", dir="/tmp"))
    base.chmod(0o755)
    yield base / "sandboxes"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The `store:` section for each backend; postgres gets a fresh database per test (DSN via env)."""
    if request.param == "sqlite":
        return {"sqlite": str(tmp_path / "state.sqlite")}
    server: PostgresServer = request.getfixturevalue("pg_server")
    dsn = server.create_database(f"drwatch_test_{os.getpid()}_{next(_counter)}")
    monkeypatch.setenv("DRWATCH_TEST_DSN", dsn)
    return {"postgres": {"dsn_env": "DRWATCH_TEST_DSN"}}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("asyncio") is not None and isinstance(item, pytest.Function):
            item.fixturenames.append("_loop_guard")


@pytest.fixture
async def _loop_guard() -> AsyncIterator[None]:
    """Fail a test when the event loop reports an unhandled exception (e.g. a task nobody awaited)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield
    loop.set_exception_handler(previous)
    if errors:
        pytest.fail(f"unhandled event-loop errors: {errors!r}")


# --- the fault matrix's table (rows come from tests/faults/test_matrix*.py, also from xdist workers) ---


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Rows recorded by test_matrix.py in a pytest-xdist worker reach the controller with the test's report."""
    for name, value in report.user_properties:
        if name == "fault_matrix_row" and isinstance(value, dict):
            from tests.faults.conftest import MATRIX

            MATRIX[value["fault"]] = {c: (got, frozenset(want)) for c, (got, want) in value["cells"].items()}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    faults = sys.modules.get("tests.faults.conftest")  # loaded only when fault tests ran (or reported a row)
    if faults is None or not faults.MATRIX:
        return
    from tests.faults.estate import COLUMNS

    MATRIX, NOTES = faults.MATRIX, faults.NOTES
    cols = [c for c in (*COLUMNS, "healthy") if any(c in row for row in MATRIX.values())]
    width = max(len(f) for f in MATRIX) + 2
    tr = terminalreporter
    tr.section("fault matrix: fault x validator -> outcome (expected in brackets where it differs)")
    tr.write_line("fault".ljust(width) + " ".join(c.ljust(20) for c in cols))
    mismatches = 0
    for fault, row in MATRIX.items():
        cells = []
        for c in cols:
            if c not in row:
                cells.append("-".ljust(20))
                continue
            got, want = row[c]
            ok = got in want
            mismatches += not ok
            cells.append((got if ok else f"{got}!=[{'|'.join(sorted(want))}]").ljust(20))
        tr.write_line(fault.ljust(width) + " ".join(cells))
    tr.write_line(f"mismatches: {mismatches}")
    for note in NOTES:
        tr.write_line(note)
