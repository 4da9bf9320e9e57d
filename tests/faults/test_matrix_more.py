"""The second half of the fault matrix (see test_matrix.py; split so that two pytest-xdist workers share it)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.estate import Scenario
from tests.faults.test_matrix import SECOND_HALF, check_fault, scenario

__all__ = ["scenario"]  # the fixture, imported so that this module's tests can use it


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SECOND_HALF, indirect=True)
def test_fault(scenario: Scenario, record_property: Any) -> None:
    check_fault(scenario, record_property)
