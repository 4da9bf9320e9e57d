"""Fixtures shared by all tests: real PostgreSQL, moto and Ceph RGW servers (session), store backends,
event-loop guard."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pgserver import PostgresServer
from tests.s3servers import CephRGW, MotoServer, ceph_rgw, moto_server

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
