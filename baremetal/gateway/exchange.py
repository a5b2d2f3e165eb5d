"""One POST request from start to end: key, body, model, the backend attempts (baremetal.gateway.failover),
metrics, and the client going away (which cancels the work, and so closes the connection to the
backend, which stops it).

An Exchange is a plain ASGI app per endpoint; backends answer through a Responder, which records the
status and the time of the first body byte for the metrics, returns the request id, meters the usage
the engine reports (baremetal.gateway.usage), and tells the request's Flight when it sends (the monitor
never cancels a request in the middle of a send). What happens before the first attempt (key, body,
model, limits) and after the last byte (usage, limits, the log line) is baremetal.gateway.intake.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from baremetal.gateway.endpoints import ANTHROPIC_ENDPOINTS, Endpoint
from baremetal.gateway.errors import GatewayError
from baremetal.gateway.failover import Failover
from baremetal.gateway.flights import Flight
from baremetal.gateway.keys import OPEN, KeyIdentity
from baremetal.gateway.usage import StreamMeter, Usage, usage_in
from baremetal.gateway.validation import MAX_BODY_BYTES, body_too_large

if TYPE_CHECKING:
    from baremetal.gateway.app import Gateway
    from baremetal.gateway.routing import Backend

log = logging.getLogger("baremetal.gateway")
CLIENT_GONE = 499      # nginx's status for "the client closed the connection first" (metrics only)
JSON = b"application/json"


class ClientGone(Exception):
    """The client disconnected before the answer was complete."""


@dataclass(frozen=True)
class ClientRequest:
    """The request being served."""

    endpoint: str           # chat | completions | embeddings | rerank | score | responses | ... (endpoints.py)
    path: str               # as the client sent it: forwarded as is to pass-through backends
    body: bytes
    payload: dict[str, Any]
    model: str
    request_id: str = ""    # the client's X-Request-Id, else one made by the gateway
    headers: Mapping[str, str] = field(default_factory=dict)   # sent to pass-through backends
    key: KeyIdentity = OPEN


class Responder:
    """Sends the answer through ASGI `send`; remembers what was sent."""

    def __init__(self, send: Callable[[dict], Awaitable[None]], started_s: float, request_id: str = "",
                 anthropic: bool = False, flight: Flight | None = None):
        self._send = send
        self.started_s = started_s
        self.flight = flight or Flight("", False)
        self.status = 0
        self.first_byte_s: float | None = None
        self.finished = False
        self.request_id = request_id
        self.anthropic = anthropic          # errors in Anthropic's shape (its messages API)
        self.meter: StreamMeter | None = None
        self.whole_usage: Usage | None = None
        self.key: KeyIdentity | None = None   # set once the key is known (intake)
        self.head = b""                       # the answer's first bytes (a Response's id is there)
        self.model = ""                       # set once the model is known to be served

    async def _out(self, message: dict) -> None:
        flight = self.flight
        flight.sending = True
        try:
            await self._send(message)
        finally:
            flight.sending = False
            flight.wait_again()

    @property
    def started(self) -> bool:
        return self.status != 0

    @property
    def usage(self) -> Usage:
        """The tokens the engine reported for this request (0 when it reported none)."""
        return self.whole_usage or (self.meter.usage if self.meter else Usage())

    async def start(self, status: int, content_type: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status = status
        await self._out({"type": "http.response.start", "status": status,
                         "headers": [(b"content-type", content_type), (b"x-request-id", self.request_id.encode()),
                                     *headers]})

    async def chunk(self, data: bytes) -> None:
        """Stream bytes to the client: the per-chunk path (kept cheap: _out inlined)."""
        flight = self.flight
        if self.first_byte_s is None:
            self.first_byte_s = time.perf_counter() - self.started_s
            self.head = data[:512]
        if self.meter is not None:
            data = self.meter.feed(data)
            if not data:                   # held back until its event is whole (or a usage event taken out)
                flight.waiting_since_s = time.monotonic()
                return
        flight.sending = True
        try:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            flight.sending = False
            flight.waiting_since_s = time.monotonic()

    async def comment(self, data: bytes) -> None:
        """SSE comment bytes (keep-alive while held): not the answer's first byte, not metered."""
        await self._out({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        if self.first_byte_s is None and data:
            self.first_byte_s = time.perf_counter() - self.started_s
        if self.meter is not None:
            data = (self.meter.feed(data) if data else b"") + self.meter.finish()
        self.finished = True
        await self._out({"type": "http.response.body", "body": data, "more_body": False})

    async def whole(self, status: int, content_type: bytes, data: bytes,
                    headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """A complete answer with a known length."""
        if status == 200 and content_type.startswith(JSON):
            self.whole_usage = usage_in(data)
            self.head = data[:512]
        self.meter = None
        await self.start(status, content_type, ((b"content-length", str(len(data)).encode()), *headers))
        await self.end(data)

    async def error(self, error: GatewayError) -> None:
        headers = tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in error.headers)
        await self.whole(error.status, JSON, error.anthropic_body() if self.anthropic else error.body(), headers)
def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def headers_of(scope: dict, names: frozenset[bytes]) -> dict[bytes, str]:
    """The request headers named in `names` (lower case), in one pass."""
    return {key: value.decode("latin-1") for key, value in scope["headers"] if key in names}


async def read_body(scope: dict, receive: Callable[[], Awaitable[dict]]) -> bytes:
    """The whole request body, refusing to read past MAX_BODY_BYTES."""
    declared = header(scope, b"content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise body_too_large(int(declared))
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise body_too_large()
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


Handler = Callable[["Gateway", ClientRequest, "Backend", Responder, Failover], Awaitable[None]]


class Exchange:
    """The ASGI app of one POST endpoint."""

    def __init__(self, gateway: "Gateway", endpoint: Endpoint):
        self.gateway = gateway
        self.endpoint = endpoint.name
        self.spec = endpoint
        self.anthropic = endpoint.name in ANTHROPIC_ENDPOINTS

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        gateway = self.gateway
        intake, flights = gateway.intake, gateway.flights
        flight = Flight("", False, asyncio.current_task())
        respond = Responder(send, time.perf_counter(), anthropic=self.anthropic, flight=flight)
        labels = ["", ""]                # model, backend: set once a backend is chosen
        admitted = False
        try:
            call = await intake.read_request(gateway, self.spec, scope, receive, respond)
            admitted = intake.admit(gateway, call)
            flight.model, flight.stream = call.model, call.payload.get("stream") is True
            flights.add(flight)
            failover = Failover(gateway, call, respond, labels, respond.request_id)
            await _until_disconnect(receive, respond, failover.run())
        except GatewayError as error:
            if not respond.started:
                await respond.error(error)
        except ClientGone:
            respond.status = respond.status if respond.finished else CLIENT_GONE
        except Exception as error:  # noqa: BLE001 - a bug must cost one request a 500, never the process
            log.error("unexpected error on %s (request %s): %r", scope["path"], respond.request_id, error,
                      exc_info=error)
            if not respond.started:
                await respond.error(GatewayError(500, "The gateway failed on this request; its log has the "
                                                 "details.", "server_error", "internal_error"))
        finally:
            flights.remove(flight)
            gateway.metrics.answered(labels[0], labels[1], self.endpoint, respond.status or CLIENT_GONE,
                                     time.perf_counter() - respond.started_s, respond.first_byte_s)
            intake.settle(gateway, scope, respond, labels[1], admitted)


async def _until_disconnect(receive: Callable, respond: Responder, work: Awaitable[None]) -> None:
    """Run `work`, cancelling it if the client disconnects first (then raise ClientGone).

    One watcher task reads `receive`: with the body read, the next message is http.disconnect, sent
    when the client goes (uvicorn also sends it once the answer is complete, hence `respond.finished`).
    """
    task = asyncio.current_task()
    gone, active = False, True

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    def on_disconnect(watcher: asyncio.Future) -> None:
        nonlocal gone
        if active and not watcher.cancelled() and watcher.exception() is None and not respond.finished:
            gone = True
            task.cancel()

    watcher = asyncio.ensure_future(watch())
    watcher.add_done_callback(on_disconnect)
    try:
        await work
    except asyncio.CancelledError:
        if gone:
            task.uncancel()
            raise ClientGone() from None
        raise
    finally:
        active = False
        watcher.cancel()
