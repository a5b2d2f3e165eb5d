"""Per-key limits: requests per minute, tokens per minute, requests at once. Past one: a 429 in OpenAI's
error shape with Retry-After (and OpenAI's x-ratelimit-* headers), so SDKs back off as they do there.

- requests_per_minute: at most that many requests admitted in the last 60 s.
- tokens_per_minute: prompt + completion tokens of the requests that finished in the last 60 s, as the
  engine reported them; a request is refused while that sum is at the limit. Tokens are known only once
  a request ends, so a burst admitted together can pass the limit once; the next ones then wait.
- max_concurrent: requests of the key in flight at once.

The last 60 s are counted in one-second buckets (a ring of 60 [second, count] pairs per key), in this
process (Limiter) or, with several gateway processes, in memory they share (shared_limits.SharedLimiter):
the decision is the same pure function either way. State is kept per key *name*, so a reload that changes
a key's limits keeps its counters. Decisions take the clock as an argument (tests pass their own).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from baremetal.gateway.errors import GatewayError
from baremetal.gateway.keys import KeyIdentity

WINDOW_S = 60


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused now, and when to come back."""

    limit: str                    # requests_per_minute | tokens_per_minute | max_concurrent
    allowed: int
    used: int
    retry_after_s: float

    def error(self, key: str) -> GatewayError:
        """The 429 a client gets."""
        wait_s = max(1, math.ceil(self.retry_after_s))
        what = {"requests_per_minute": "requests per minute", "tokens_per_minute": "tokens per minute",
                "max_concurrent": "requests at once"}[self.limit]
        kind = "tokens" if self.limit == "tokens_per_minute" else "requests"
        headers = [("retry-after", str(wait_s))]
        if self.limit != "max_concurrent":
            headers += [(f"x-ratelimit-limit-{kind}", str(self.allowed)),
                        (f"x-ratelimit-remaining-{kind}", str(max(0, self.allowed - self.used))),
                        (f"x-ratelimit-reset-{kind}", f"{wait_s}s")]
        return GatewayError(429, f"Rate limit reached for key {key!r} on {what}: limit {self.allowed}, used "
                            f"{self.used}. Try again in {wait_s} s.", kind, "rate_limit_exceeded",
                            headers=tuple(headers))


Ring = Sequence[Sequence[int]]     # WINDOW_S buckets of (second, count)


def used(ring: Ring, now_s: float) -> int:
    """What the ring counts in the last WINDOW_S seconds."""
    now = math.floor(now_s)
    return sum(count for second, count in ring if 0 <= now - second < WINDOW_S)


def wait_below(ring: Ring, limit: int, now_s: float) -> float:
    """Seconds until what the ring counts drops below `limit` (oldest buckets leave first)."""
    now = math.floor(now_s)
    live = sorted((second, count) for second, count in ring if 0 <= now - second < WINDOW_S and count)
    left = sum(count for _, count in live)
    for second, count in live:
        left -= count
        if left < limit:
            return max(0.0, second + WINDOW_S - now_s)
    return float(WINDOW_S)


def add(ring: list[list[int]], now_s: float, count: int) -> None:
    """Count `count` in the bucket of this second (a bucket from an older minute starts over)."""
    second = math.floor(now_s)
    bucket = ring[second % WINDOW_S]
    if bucket[0] != second:
        bucket[0], bucket[1] = second, 0
    bucket[1] += count


def new_ring() -> list[list[int]]:
    return [[-1, 0] for _ in range(WINDOW_S)]


def refusal(identity: KeyIdentity, in_flight: int, requests: Ring, tokens: Ring, now_s: float) -> Refusal | None:
    """The first limit `identity` is past, else None. Pure."""
    if identity.max_concurrent is not None and in_flight >= identity.max_concurrent:
        return Refusal("max_concurrent", identity.max_concurrent, in_flight, 1.0)
    rpm = identity.requests_per_minute
    if rpm is not None and (count := used(requests, now_s)) >= rpm:
        return Refusal("requests_per_minute", rpm, count, wait_below(requests, rpm, now_s))
    tpm = identity.tokens_per_minute
    if tpm is not None and (count := used(tokens, now_s)) >= tpm:
        return Refusal("tokens_per_minute", tpm, count, wait_below(tokens, tpm, now_s))
    return None


@dataclass
class KeyUse:
    """What one key name has used lately (mutable, owned by the Limiter)."""

    requests: list[list[int]] = field(default_factory=new_ring)
    tokens: list[list[int]] = field(default_factory=new_ring)
    in_flight: int = 0


class Limiter:
    """Admits requests against their key's limits and books what they used (one process, one event loop)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.uses: dict[str, KeyUse] = {}

    def admit(self, identity: KeyIdentity) -> Refusal | None:
        """Count the request in, or say which limit refuses it (then nothing is counted)."""
        if not identity.limited:
            return None
        now = self.clock()
        use = self.uses.setdefault(identity.name, KeyUse())
        refused = refusal(identity, use.in_flight, use.requests, use.tokens, now)
        if refused is None:
            add(use.requests, now, 1)
            use.in_flight += 1
        return refused

    def finish(self, identity: KeyIdentity, tokens: int) -> None:
        """An admitted request ended having used `tokens` (prompt + completion)."""
        if not identity.limited:
            return
        use = self.uses.setdefault(identity.name, KeyUse())
        use.in_flight = max(0, use.in_flight - 1)
        if tokens > 0:
            add(use.tokens, self.clock(), tokens)
