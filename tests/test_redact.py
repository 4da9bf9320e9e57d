"""drwatch.core.secrets.redact: every value read as a secret is replaced by ``<redacted>`` in log output and stored
findings; a short one (a test key ``test``, a weak password) only where it stands alone, so that the words holding
it (``pytest`` in a path, ``latest.dump``) stay readable."""

from __future__ import annotations

import uuid

import pytest

from drwatch.core import secrets


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    known: set[str] = set()
    monkeypatch.setattr(secrets, "_KNOWN", known)
    return known


def test_a_short_secret_is_redacted_where_it_stands_alone(registered: set[str]) -> None:
    secrets.register("test")
    assert secrets.redact("postgresql://drwatch:test@db/x") == "postgresql://drwatch:<redacted>@db/x"
    assert secrets.redact("password=test; user test") == "password=<redacted>; user <redacted>"
    assert secrets.redact("test") == "<redacted>"
    kept = "secret file /tmp/pytest-of-root/test_case0/sk is empty; e.g. latest.dump, tests/"
    assert secrets.redact(kept) == kept


def test_a_long_secret_is_redacted_wherever_it_occurs(registered: set[str]) -> None:
    value = "Sec-" + uuid.uuid4().hex
    secrets.register(value)
    assert secrets.redact(f"x{value}y and {value}") == "x<redacted>y and <redacted>"


def test_values_too_short_to_be_secrets_are_not_registered(registered: set[str]) -> None:
    secrets.register("abc")
    assert secrets.redact("abc abc") == "abc abc"
