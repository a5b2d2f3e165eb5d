"""Requests in flight, as the gateway's monitor sees them: which backend serves each one now, whether it
waits for that backend, and since when.

Four times a second the monitor gives up on a request that waits for a backend the watchdog reports
stuck (or restarting, loading, stopped: any verdict but "ready and failing probes"), and on a stream
that has waited longer than the stall limit for its next byte. The request then goes on elsewhere
(baremetal.gateway.failover). Giving up cancels the request's task where it waits for the backend,
never while it sends to the client (`sending`), so a chunk is either sent and counted or not sent; the
code that catches the cancellation turns it into `Abandoned` with `Flight.abandoned()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from baremetal.gateway.health import Verdict

if TYPE_CHECKING:
    from baremetal.config.model import Watchdog
    from baremetal.gateway.app import Gateway
    from baremetal.gateway.routing import Backend

log = logging.getLogger("baremetal.gateway")
SWEEP_INTERVAL_S = 0.25


class Abandoned(Exception):
    """The gateway gave up waiting for the backend (it is stuck, or went too long without a byte)."""


@dataclass(eq=False)
class Flight:
    """One request while the gateway serves it (mutable; the request's own task updates it)."""

    model: str
    stream: bool
    task: asyncio.Task | None = None
    backend: "Backend | None" = None   # the backend answering now; None while held or between backends
    waiting_since_s: float = 0.0       # monotonic: sent to the backend, or the last chunk sent to the client
    sending: bool = False              # sending to the client now: never cancelled then
    reason: str | None = None          # why the monitor cancelled it (until the cancellation is caught)

    def wait_again(self) -> None:
        """The backend has the next move (request just sent, or a chunk passed on)."""
        self.waiting_since_s = time.monotonic()

    def abandon(self, reason: str) -> None:
        """Cancel the request's task where it waits for the backend (the monitor's side)."""
        if self.task is not None and self.reason is None and not self.sending and self.backend is not None:
            self.reason = reason
            self.task.cancel()

    def abandoned(self) -> Abandoned | None:
        """Where a CancelledError is caught: `Abandoned` when the monitor cancelled (the cancellation is
        taken back), None when it came from elsewhere (the client left, the server stops): re-raise then."""
        if self.reason is None or self.task is None:
            return None
        reason, self.reason = self.reason, None
        self.task.uncancel()
        return None if self.task.cancelling() else Abandoned(reason)


def stall_limit_s(watchdog: "Watchdog") -> float:
    """How long a stream may wait for its next byte before the gateway gives up on it by itself.

    The watchdog's verdict comes first: it sees the engine's progress and CPU, so it tells a long
    prefill or a full queue from a hang (a frozen engine is reported in about stall_after). The gateway
    sees neither, so its own limit is the backstop for what the watchdog does not watch ([[program]]
    backends, the watchdog off): the longest the watchdog lets a computing engine go without progress
    (busy_stall_after) plus one stall_after. Whole answers send nothing until they are complete and
    have no such limit."""
    return watchdog.busy_stall_after_s + watchdog.stall_after_s


def to_abandon(flights: Iterable[Flight], unhealthy: Mapping[str, Verdict], now_s: float,
               limit_s: float) -> Iterator[tuple[Flight, str]]:
    """The flights to give up on, with why. Pure."""
    for flight in flights:
        backend = flight.backend
        if backend is None or flight.sending or flight.reason is not None:
            continue
        verdict = unhealthy.get(backend.name)
        waited_s = now_s - flight.waiting_since_s
        if verdict is not None and not verdict.last_resort:
            yield flight, f"{verdict.reason} while it waited {waited_s:.1f} s"
        elif flight.stream and waited_s >= limit_s:
            yield flight, f"no byte for {waited_s:.0f} s (stall limit {limit_s:.0f} s)"


class Flights:
    """Every request in flight in this gateway process (one event loop: a plain set)."""

    def __init__(self) -> None:
        self.active: set[Flight] = set()

    def add(self, flight: Flight) -> None:
        self.active.add(flight)

    def remove(self, flight: Flight) -> None:
        self.active.discard(flight)

    def on(self, backend_name: str) -> list[Flight]:
        """The flights the backend answers now."""
        return [f for f in self.active if f.backend is not None and f.backend.name == backend_name]


async def watch(gateway: "Gateway", interval_s: float = SWEEP_INTERVAL_S) -> None:
    """The monitor: until cancelled, give up on flights whose backend is stuck or silent too long."""
    limit_s = stall_limit_s(gateway.stack.watchdog)
    while True:
        await asyncio.sleep(interval_s)
        try:
            found = list(to_abandon(gateway.flights.active, gateway.watchdog.unhealthy(), time.monotonic(), limit_s))
            for flight, reason in found:
                flight.abandon(f"{flight.backend.name}: {reason}")
        except Exception as error:  # noqa: BLE001 - the monitor must outlive a bug in one sweep
            log.error("the request monitor failed: %r", error, exc_info=error)
