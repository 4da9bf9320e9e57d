"""Fixtures of the fault suites (a shared estate of real servers) and the fault-matrix summary table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.estate import COLUMNS, World, make_world
from tests.s3servers import MotoServer

# fault -> column -> (observed outcome, expected outcomes); filled by test_matrix.py, printed at the end.
MATRIX: dict[str, dict[str, tuple[str, frozenset[str]]]] = {}
NOTES: list[str] = []


@pytest.fixture(scope="session")
def world(moto: MotoServer) -> Iterator[World]:
    """A PostgreSQL primary (log_statement=mod) with a streaming standby, a pg_dump of production and an RDS
    instance in the session's moto: shared by every fault suite."""
    with make_world(moto) as w:
        yield w


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Rows recorded by test_matrix.py in a pytest-xdist worker reach the controller with the test's report."""
    for name, value in report.user_properties:
        if name == "fault_matrix_row" and isinstance(value, dict):
            MATRIX[value["fault"]] = {c: (got, frozenset(want)) for c, (got, want) in value["cells"].items()}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MATRIX:
        return
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
