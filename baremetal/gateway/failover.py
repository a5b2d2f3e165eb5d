"""One request's way through the replicas of its model: the first backend; another one when the first
fails before the client has a byte (refused, reset, 5xx, found stuck, silent too long); a hold while
none can take it; the backend for the rest of a started stream (handlers that can continue one call
`move`, baremetal.gateway.passthrough and baremetal.gateway.resume); and the limit on all that.

What counts against `api.migration_limit`: every re-send after a backend had the request (a retry
before the first byte, or a migration of a started stream). A refused connection does not count (the
request reached no one): refusals end only with `api.hold_timeout`. Past the limit a whole request gets
the 502 it would have had, a started stream an OpenAI error event and `[DONE]`. The gateway's log says
per request (its X-Request-Id, when the client sent one) what was held, retried and migrated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from baremetal.gateway.errors import GatewayError, bad_gateway, gateway_timeout, unavailable
from baremetal.gateway.flights import Abandoned
from baremetal.gateway.hold import (POLL_INTERVAL_S, RETRY_AVOIDED_S, HeldRequest, candidates, down_for_good,
                                    keepalive_comment)
from baremetal.gateway.migration import DONE, encode
from baremetal.gateway.upstream import BackendFailed, BackendTimedOut, BackendUnreachable

if TYPE_CHECKING:
    from baremetal.gateway.app import Gateway
    from baremetal.gateway.exchange import ClientRequest, Responder
    from baremetal.gateway.routing import Backend
    from baremetal.gateway.witness import Ticket

log = logging.getLogger("baremetal.gateway")
SSE = b"text/event-stream"


class Failover:
    """The attempts of one request (created per request by its Exchange)."""

    def __init__(self, gateway: "Gateway", call: "ClientRequest", respond: "Responder", labels: list[str],
                 request_id: str | None = None):
        self.gateway = gateway
        self.call = call
        self.respond = respond
        self.labels = labels
        self.flight = respond.flight
        self.request_id = request_id
        self.limit = gateway.stack.api.migration_limit
        self.hold_timeout_s = gateway.stack.api.hold_timeout_s
        self.backends: tuple[Backend, ...] = ()
        self.resends = 0
        self.avoid: dict[str, tuple[str, float]] = {}   # backend -> (why, when): not tried again for a second
        self.held: HeldRequest | None = None
        self._entered_s = 0.0
        self._drop_retried = False
        self._pending_drop: Exception | None = None     # a dropped connection, tried once more at once
        self._ticket: "Ticket | None" = None

    # -- the request as a whole ------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the request: pick, send, and on a failure before the client has a byte, move on."""
        try:
            self.backends = await self.gateway.backends_of(self.call.model, self.call.key)
            self.labels[:] = [self.call.model, ""]
            backend = await self.pick()
            self.enter(backend)
            while True:
                try:
                    await self.gateway.handler(backend)(self.gateway, self.call, backend, self.respond, self)
                    self.leave()
                    return
                except (BackendFailed, BackendUnreachable, Abandoned) as error:
                    failure: Exception = error
                except asyncio.CancelledError:
                    failure = self.flight.abandoned()
                    if failure is None:
                        raise
                if self.respond.first_byte_s is not None:     # the handler could not go on from there
                    raise self.failed(_answer(failure)(f"Backend {self.labels[1]} of model {self.call.model!r} "
                                                       f"failed mid-stream: {failure}"))
                backend = await self.move(failure)
        except GatewayError as error:
            if not self.respond.started:
                raise
            if not self.respond.finished:
                await self.respond.end(encode(error.payload()) + DONE)
        finally:
            self.leave(answered=False)

    def can_resend(self) -> bool:
        """Whether one more re-send is allowed (a handler asks before turning a 5xx into a failure)."""
        return self.resends < self.limit

    def failed(self, error: GatewayError) -> GatewayError:
        """`error` ends the request; a started stream counts as a failed migration."""
        if self.respond.first_byte_s is not None:
            self.gateway.metrics.count("migration_failed_total", self.call.model)
        self.note(f"failed: {error.message}", level=logging.WARNING)
        return error

    def note(self, what: str, level: int = logging.INFO) -> None:
        """One line in the gateway's log about this request."""
        who = f"request {self.request_id}" if self.request_id else "a request"
        log.log(level, "%s for %s (%s): %s", who, self.call.model, self.call.endpoint, what)

    # -- moving between backends -------------------------------------------------------------------------
    async def move(self, failure: Exception) -> "Backend":
        """The backend for the rest of the request, after the current one failed with `failure`."""
        failed = self.flight.backend
        started = self.respond.first_byte_s is not None
        dropped = isinstance(failure, BackendUnreachable) and failure.same_again
        self.leave(failure)
        if dropped and not self._drop_retried:
            # A pooled connection the backend had closed, or the backend dying with the request: sent once
            # more to it at once. If that is refused, the backend had died with it (counted then).
            self._drop_retried, self._pending_drop = True, failure
            self.enter(failed)
            return failed
        pending, self._pending_drop = self._pending_drop, None
        if pending is not None and isinstance(failure, BackendUnreachable) and not dropped:
            failure, reached = pending, True
        else:
            reached = dropped or not isinstance(failure, BackendUnreachable)
        if started:         # the rest of a stream comes from a backend of the same kind (the handler continues it)
            handler = _code(self.gateway.handler(failed))
            self.backends = tuple(b for b in self.backends if _code(self.gateway.handler(b)) is handler)
        if reached:
            self.resends += 1
            if self.resends > self.limit:
                limit = f"; gave up after {self.resends - 1} re-sends (api.migration_limit = {self.limit})"
                raise self.failed(_answer(failure)(f"Backend {failed.name} of model {self.call.model!r} failed"
                                                   f"{' mid-stream' if started else ''}: {failure}{limit}"))
            self.gateway.metrics.count("migrated_total" if started else "retried_total", self.call.model)
        self.avoid[failed.name] = (_short(failure), time.monotonic())
        backend = await self.pick()
        if reached:
            self.note(f"{'migrated' if started else 'retried'} from {failed.name} to {backend.name}: {failure}")
        self.enter(backend)
        return backend

    async def pick(self) -> "Backend":
        """The best backend that can take the request now; while none can, hold it. The hold lasts
        across tries of backends that refuse it, up to hold_timeout (a backend that answers part of it
        gives it a fresh hold)."""
        gateway, model = self.gateway, self.call.model
        waiting = False
        try:
            while True:
                now = time.monotonic()
                unhealthy, draining = gateway.watchdog.unhealthy(), gateway.drains.draining()
                avoid = {name: why for name, (why, at) in self.avoid.items() if now - at < RETRY_AVOIDED_S}
                found, skipped = candidates(self.backends, gateway.balancer.states, unhealthy, draining, avoid, now)
                if found:
                    return found[0]
                held = self.held
                if held is None and self.hold_timeout_s and not down_for_good(self.backends, unhealthy, draining):
                    held = self.held = HeldRequest(now, self.hold_timeout_s, self.flight.stream)
                    gateway.metrics.count("held_total", model)
                    self.note(f"held: no replica can take it ({'; '.join(skipped)})")
                elif held is None or held.expired(now) or down_for_good(self.backends, unhealthy, draining):
                    waited = [f"held {held.waited_s(now):.0f} s (api.hold_timeout)"] if held else []
                    self.labels[:] = [model, ""]
                    raise self.failed(unavailable(model, skipped + waited))
                if not waiting:
                    waiting = True
                    gateway.metrics.hold(model)
                    gateway.witness.hold_started(model)
                if held.comment_due(now):
                    await self._comment(keepalive_comment(model, skipped))
                    held.commented_s = now
                await asyncio.sleep(POLL_INTERVAL_S)
        finally:
            if waiting:
                gateway.metrics.unhold(model)
                gateway.witness.hold_ended(model)

    def _end_hold(self) -> None:
        """The request got going (a backend answered part of it) or ended: its hold is over."""
        if self.held is not None:
            self.note(f"waited {self.held.waited_s(time.monotonic()):.1f} s for a replica")
            self.held = None

    async def _comment(self, data: bytes) -> None:
        if not self.respond.started:
            await self.respond.start(200, SSE, ((b"cache-control", b"no-cache"),))
        await self.respond.comment(data)

    def enter(self, backend: "Backend") -> None:
        """`backend` answers the request from now on."""
        self.flight.backend = backend
        self.flight.wait_again()
        self._entered_s = self.flight.waiting_since_s
        self.labels[:] = [self.call.model, backend.name]
        self.gateway.balancer.started(backend)
        self.gateway.metrics.started(self.call.model, backend.name)
        self._ticket = self.gateway.witness.opened(backend)     # run/gateway.json: the watchdog's witness

    def leave(self, failure: Exception | None = None, answered: bool = True) -> None:
        """The current backend is done with the request (it answered, or failed with `failure`)."""
        backend, gateway = self.flight.backend, self.gateway
        if backend is None:
            return
        if failure is None or self.flight.waiting_since_s > self._entered_s:    # answered, or sent part of it
            self._end_hold()
        self.flight.backend = None
        if self._ticket is not None:
            self._ticket.close()
            self._ticket = None
        gateway.balancer.finished(backend)
        gateway.metrics.stopped(self.call.model, backend.name)
        if isinstance(failure, BackendUnreachable):
            gateway.balancer.refused(backend, time.monotonic(), failure.reason)
            gateway.metrics.backend_error(backend.name, "unreachable")
        elif failure is not None:
            reason = "stuck" if isinstance(failure, Abandoned) else "timeout" if isinstance(failure, BackendTimedOut) \
                else "failed"
            gateway.metrics.backend_error(backend.name, reason)
        elif answered:
            gateway.balancer.answered(backend)


def _answer(failure: Exception):
    """The error a failure ends the request with: a 504 when the backend went silent, else a 502."""
    return gateway_timeout if isinstance(failure, BackendTimedOut) else bad_gateway


def _code(handler):
    """The code behind a handler (metering wrappers aside)."""
    return getattr(handler, "inner", handler)


def _short(failure: Exception) -> str:
    text = str(failure)
    return text if len(text) <= 120 else text[:117] + "..."
