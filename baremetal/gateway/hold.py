"""Holding a request while no replica of its model can take it, instead of answering 503 at once.

A replica cannot take a request while the watchdog reports it unhealthy (restarting, loading, stuck;
one still `ready` but failing probes stays a last resort), while it is listed in drain.json, or for a
second after it refused this request's connection or failed it. When none is left, the request waits
(up to `api.hold_timeout`) and is sent as soon as one can take it; a held stream is told so with an SSE
comment after a second and every few seconds after (proxies and clients keep the connection; SSE
clients ignore comments). Past the timeout it gets the 503 it would have had, naming what it waited for.
A model whose every replica is down until an operator acts (stopped, given up, a hardware fault) is
not held: the 503 comes at once.

Pure: which backends can take a request now, and the clock of one held request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from baremetal.gateway.health import Verdict
from baremetal.gateway.routing import Backend, BackendState, order_backends

POLL_INTERVAL_S = 0.25       # how often a held request looks again (the state files are checked as often)
RETRY_AVOIDED_S = 1.0        # a backend that refused or failed this request is tried again after this
FIRST_COMMENT_S = 1.0        # a held stream's first keep-alive comment (shorter holds stay invisible)
COMMENT_EVERY_S = 5.0


def candidates(backends: tuple[Backend, ...], states: Mapping[str, BackendState], unhealthy: Mapping[str, Verdict],
               draining: frozenset[str], avoid: Mapping[str, str], now_s: float) -> tuple[list[Backend], list[str]]:
    """(the backends that can take the request now, best first; why each other one cannot). Pure."""
    ordered, skipped = order_backends(backends, states, unhealthy, now_s)
    found = []
    for backend in ordered:
        if backend.name in draining:
            skipped.append(f"{backend.name}: draining")
        elif backend.name in avoid:
            skipped.append(f"{backend.name}: {avoid[backend.name]}")
        else:
            found.append(backend)
    return found, skipped


def down_for_good(backends: tuple[Backend, ...], unhealthy: Mapping[str, Verdict], draining: frozenset[str]) -> bool:
    """Every backend is down until an operator acts, and none is merely draining: holding is pointless. Pure."""
    return bool(backends) and all(b.name not in draining and b.name in unhealthy and unhealthy[b.name].for_good
                                  for b in backends)


@dataclass
class HeldRequest:
    """The clock of one held request (monotonic seconds)."""

    since_s: float
    timeout_s: float
    stream: bool
    commented_s: float | None = None

    def waited_s(self, now_s: float) -> float:
        return now_s - self.since_s

    def expired(self, now_s: float) -> bool:
        return now_s - self.since_s >= self.timeout_s

    def comment_due(self, now_s: float) -> bool:
        """Whether to send the client a keep-alive comment now (streams only)."""
        if not self.stream:
            return False
        if self.commented_s is None:
            return now_s - self.since_s >= FIRST_COMMENT_S
        return now_s - self.commented_s >= COMMENT_EVERY_S


def keepalive_comment(model: str, skipped: list[str]) -> bytes:
    """An SSE comment line for a held stream: what it waits for."""
    why = "; ".join(skipped) or "no backend"
    text = f"baremetal: waiting for a replica of {model} ({why})".replace("\r", " ").replace("\n", " ")
    return f": {text}\n\n".encode()
