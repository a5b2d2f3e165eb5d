"""Per-key limits: requests per minute, tokens per minute, requests at once. Past one: a 429 in OpenAI's
error shape with Retry-After (and OpenAI's x-ratelimit-* headers), so SDKs back off as they do there.

- requests_per_minute: at most that many requests admitted in any 60 s (a sliding log of admissions).
- tokens_per_minute: prompt + completion tokens of the requests that finished in the last 60 s, as the
  engine reported them; a request is refused while that sum is at the limit. Tokens are known only once
  a request ends, so a burst admitted together can pass the limit once; the next ones then wait.
- max_concurrent: requests of the key in flight at once.

State is kept per key *name*, so a reload that changes a key's limits keeps its counters. One event loop:
no locks. Decisions take the clock as an argument (tests pass their own).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from baremetal.gateway.errors import GatewayError
from baremetal.gateway.keys import KeyIdentity

WINDOW_S = 60.0


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


@dataclass
class KeyUse:
    """What one key name has used lately (mutable, owned by the Limiter)."""

    admitted_s: deque = field(default_factory=deque)        # admission times, oldest first
    tokens: deque = field(default_factory=deque)            # [second, tokens] per whole second, oldest first
    token_sum: int = 0
    in_flight: int = 0


def _prune(use: KeyUse, now_s: float) -> None:
    while use.admitted_s and use.admitted_s[0] <= now_s - WINDOW_S:
        use.admitted_s.popleft()
    while use.tokens and use.tokens[0][0] <= now_s - WINDOW_S:
        use.token_sum -= use.tokens.popleft()[1]


def refusal(identity: KeyIdentity, use: KeyUse, now_s: float) -> Refusal | None:
    """The first limit `identity` is past with `use` at `now_s`, else None. Pure (after pruning)."""
    if identity.max_concurrent is not None and use.in_flight >= identity.max_concurrent:
        return Refusal("max_concurrent", identity.max_concurrent, use.in_flight, 1.0)
    rpm = identity.requests_per_minute
    if rpm is not None and len(use.admitted_s) >= rpm:
        oldest = use.admitted_s[len(use.admitted_s) - rpm]
        return Refusal("requests_per_minute", rpm, len(use.admitted_s), oldest + WINDOW_S - now_s)
    tpm = identity.tokens_per_minute
    if tpm is not None and use.token_sum >= tpm:
        left, wait_s = use.token_sum, WINDOW_S
        for second, tokens in use.tokens:             # when enough of the window has passed
            left -= tokens
            if left < tpm:
                wait_s = second + WINDOW_S - now_s
                break
        return Refusal("tokens_per_minute", tpm, use.token_sum, wait_s)
    return None


class Limiter:
    """Admits requests against their key's limits and books what they used."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.uses: dict[str, KeyUse] = {}

    def admit(self, identity: KeyIdentity) -> Refusal | None:
        """Count the request in, or say which limit refuses it (then nothing is counted)."""
        if not identity.limited:
            return None
        now = self.clock()
        use = self.uses.setdefault(identity.name, KeyUse())
        _prune(use, now)
        refused = refusal(identity, use, now)
        if refused is None:
            use.admitted_s.append(now)
            use.in_flight += 1
        return refused

    def finish(self, identity: KeyIdentity, tokens: int) -> None:
        """An admitted request ended having used `tokens` (prompt + completion)."""
        if not identity.limited:
            return
        use = self.uses.setdefault(identity.name, KeyUse())
        use.in_flight = max(0, use.in_flight - 1)
        if tokens > 0:
            second = math.floor(self.clock())
            if use.tokens and use.tokens[-1][0] == second:
                use.tokens[-1][1] += tokens
            else:
                use.tokens.append([second, tokens])
            use.token_sum += tokens
