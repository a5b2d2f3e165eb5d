"""Polling with a deadline: the tests' one way to wait for something (never sleep and hope)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout_s: float, interval_s: float = 0.1, what: str = "condition"):
    """Poll `predicate` until it returns something true, and return that; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        time.sleep(interval_s)
