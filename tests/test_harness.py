"""The test harness itself: what CI relies on to mean what it says."""

from __future__ import annotations

import os

import pytest
from conftest import broker_url, skip_unless_required
from hypothesis import settings


def test_a_missing_environment_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVENTBUS_REQUIRE_BROKERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no frobnicator"):
        skip_unless_required("no frobnicator")
    monkeypatch.setenv("EVENTBUS_REQUIRE_BROKERS", "1")
    with pytest.raises(pytest.fail.Exception, match=r"no frobnicator .*not skipped"):
        skip_unless_required("no frobnicator")
    # and so does an unreachable broker (a port nothing listens on, no Docker fallback:
    # the URL comes from the environment variable)
    monkeypatch.setenv("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(pytest.fail.Exception, match="redis broker not reachable"):
        broker_url("redis")


def test_property_tests_are_reproducible_in_ci() -> None:
    current = settings()
    assert current.print_blob
    assert current.derandomize == bool(os.environ.get("CI"))
