"""Per-key limits with a fake clock (one-second buckets over the last minute), and the 429 a client gets."""

from __future__ import annotations

import pytest

from baremetal.gateway.keys import KeyIdentity
from baremetal.gateway.limits import Limiter, used


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def admitted(limiter: Limiter, key: KeyIdentity, count: int) -> list:
    return [limiter.admit(key) for _ in range(count)]


def test_requests_per_minute_is_a_sliding_window():
    clock = Clock()
    limiter = Limiter(clock)
    key = KeyIdentity("a", requests_per_minute=3)
    assert admitted(limiter, key, 3) == [None, None, None]
    for _ in range(3):
        limiter.finish(key, 0)
    clock.now_s += 20
    refused = limiter.admit(key)
    assert (refused.limit, refused.allowed, refused.used, refused.retry_after_s) == ("requests_per_minute", 3, 3, 40.0)
    clock.now_s += 40                                   # the first three leave the window together
    assert admitted(limiter, key, 3) == [None, None, None]
    assert limiter.admit(key).limit == "requests_per_minute"


def test_tokens_per_minute_counts_what_finished():
    clock = Clock()
    limiter = Limiter(clock)
    key = KeyIdentity("a", tokens_per_minute=100)
    assert limiter.admit(key) is None and limiter.admit(key) is None    # both admitted before any usage is known
    limiter.finish(key, 70)
    clock.now_s += 10
    limiter.finish(key, 40)                             # 110 in the window: over the limit
    refused = limiter.admit(key)
    assert (refused.limit, refused.used, refused.retry_after_s) == ("tokens_per_minute", 110, 50.0)
    clock.now_s += 50                                   # the 70 left: 40 < 100
    assert limiter.admit(key) is None


def test_max_concurrent_frees_a_slot_when_one_finishes():
    limiter = Limiter(Clock())
    key = KeyIdentity("a", max_concurrent=2)
    assert admitted(limiter, key, 2) == [None, None]
    refused = limiter.admit(key)
    assert (refused.limit, refused.used, refused.retry_after_s) == ("max_concurrent", 2, 1.0)
    limiter.finish(key, 10)
    assert limiter.admit(key) is None


def test_a_refused_request_uses_nothing_and_counters_go_by_name():
    clock = Clock()
    limiter = Limiter(clock)
    outcomes = admitted(limiter, KeyIdentity("a", requests_per_minute=1, max_concurrent=5), 3)
    assert [refused.limit if refused else None for refused in outcomes] == [None, "requests_per_minute",
                                                                             "requests_per_minute"]
    assert used(limiter.uses["a"].requests, clock.now_s) == 1 and limiter.uses["a"].in_flight == 1
    raised = KeyIdentity("a", requests_per_minute=2, max_concurrent=5)   # a reload raised the limit
    assert limiter.admit(raised) is None and limiter.admit(raised) is not None
    assert limiter.admit(KeyIdentity("b")) is None and "b" not in limiter.uses   # unlimited: nothing kept


@pytest.mark.parametrize("limit, kind", [("requests_per_minute", "requests"), ("tokens_per_minute", "tokens")])
def test_the_429_speaks_openai(limit, kind):
    clock = Clock()
    limiter = Limiter(clock)
    key = KeyIdentity("team-a", **{limit: 1})
    limiter.admit(key)
    limiter.finish(key, 5)
    clock.now_s += 0.4
    error = limiter.admit(key).error("team-a")
    assert error.status == 429 and error.code == "rate_limit_exceeded" and error.error_type == kind
    assert "key 'team-a'" in error.message and "limit 1" in error.message
    headers = dict(error.headers)
    assert headers["retry-after"] == "60" and headers[f"x-ratelimit-limit-{kind}"] == "1"
    assert headers[f"x-ratelimit-remaining-{kind}"] == "0" and headers[f"x-ratelimit-reset-{kind}"] == "60s"


def test_several_processes_share_one_keys_limits(tmp_path):
    """Forked workers admit against one memory map: 2 x 40 tries at 50 per minute let exactly 50 in."""
    import multiprocessing

    from baremetal.gateway.shared_limits import SharedLimiter

    key = KeyIdentity("team-a", requests_per_minute=50, max_concurrent=1000)
    limiter = SharedLimiter(["team-a"], tmp_path)
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def worker() -> None:
        results.put(sum(limiter.admit(key) is None for _ in range(40)))

    processes = [context.Process(target=worker) for _ in range(2)]
    for process in processes:
        process.start()
    admitted_counts = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(30)
    assert sum(admitted_counts) == 50
    refused = limiter.admit(key)
    assert (refused.limit, refused.used) == ("requests_per_minute", 50)
    for _ in range(50):
        limiter.finish(key, 3)
    slow = KeyIdentity("team-a", tokens_per_minute=100)
    assert limiter.admit(slow).used == 150 and limiter.admit(KeyIdentity("other", max_concurrent=1)) is None
