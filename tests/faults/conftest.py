"""Fixtures of the fault suites (a shared estate of real servers) and the fault-matrix summary table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.estate import World, make_world
from tests.support.s3servers import MotoServer

# fault -> column -> (observed outcome, expected outcomes); filled by test_matrix.py, printed at the end by the hooks
# in tests/conftest.py (the root conftest: the only one pytest-xdist's controller loads).
MATRIX: dict[str, dict[str, tuple[str, frozenset[str]]]] = {}
NOTES: list[str] = []


@pytest.fixture(scope="session")
def world(moto: MotoServer) -> Iterator[World]:
    """A PostgreSQL primary (log_statement=mod) with a streaming standby, a pg_dump of production and an RDS
    instance in the session's moto: shared by every fault suite."""
    with make_world(moto) as w:
        yield w
