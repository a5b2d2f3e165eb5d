"""One POST request from start to end: key, body, model, the backend attempts (baremetal.gateway.failover),
metrics, and the client going away (which cancels the work, and so closes the connection to the
backend, which stops it).

An Exchange is a plain ASGI app per endpoint; backends answer through a Responder, which records the
status and the time of the first body byte for the metrics, and tells the request's Flight when it
sends (the monitor never cancels a request in the middle of a send).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from baremetal.gateway.auth import authorized
from baremetal.gateway.errors import GatewayError, unauthorized
from baremetal.gateway.failover import Failover
from baremetal.gateway.flights import Flight
from baremetal.gateway.validation import MAX_BODY_BYTES, body_too_large, check_fields, parse_body

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

    endpoint: str           # chat | completions | embeddings | rerank | score
    path: str               # as the client sent it: forwarded as is to pass-through backends
    body: bytes
    payload: dict[str, Any]
    model: str


class Responder:
    """Sends the answer through ASGI `send`; remembers what was sent."""

    def __init__(self, send: Callable[[dict], Awaitable[None]], started_s: float, flight: Flight | None = None):
        self._send = send
        self.started_s = started_s
        self.flight = flight or Flight("", False)
        self.status = 0
        self.first_byte_s: float | None = None
        self.finished = False

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

    async def start(self, status: int, content_type: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status = status
        await self._out({"type": "http.response.start", "status": status,
                         "headers": [(b"content-type", content_type), *headers]})

    async def chunk(self, data: bytes) -> None:
        if self.first_byte_s is None:
            self.first_byte_s = time.perf_counter() - self.started_s
        flight = self.flight           # _out inlined: this is the per-chunk path
        flight.sending = True
        try:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            flight.sending = False
            flight.waiting_since_s = time.monotonic()

    async def comment(self, data: bytes) -> None:
        """SSE comment bytes (keep-alive while held): not the answer's first byte."""
        await self._out({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        if self.first_byte_s is None and data:
            self.first_byte_s = time.perf_counter() - self.started_s
        self.finished = True
        await self._out({"type": "http.response.body", "body": data, "more_body": False})

    async def whole(self, status: int, content_type: bytes, data: bytes) -> None:
        """A complete answer with a known length."""
        await self.start(status, content_type, ((b"content-length", str(len(data)).encode()),))
        await self.end(data)

    async def error(self, error: GatewayError) -> None:
        await self.whole(error.status, JSON, error.body())


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


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

    def __init__(self, gateway: "Gateway", endpoint: str):
        self.gateway = gateway
        self.endpoint = endpoint

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        flight = Flight("", False, asyncio.current_task())
        respond = Responder(send, time.perf_counter(), flight)
        labels = ["", ""]                # model, backend: set once a backend is chosen
        flights = self.gateway.flights
        try:
            if not authorized(header(scope, b"authorization"), self.gateway.keys):
                raise unauthorized()
            body = await read_body(scope, receive)
            payload = parse_body(body)
            call = ClientRequest(self.endpoint, scope["path"], body, payload, check_fields(self.endpoint, payload))
            flight.model, flight.stream = call.model, payload.get("stream") is True
            flights.add(flight)
            failover = Failover(self.gateway, call, respond, labels, header(scope, b"x-request-id"))
            await _until_disconnect(receive, respond, failover.run())
        except GatewayError as error:
            if not respond.started:
                await respond.error(error)
        except ClientGone:
            respond.status = respond.status if respond.finished else CLIENT_GONE
        except Exception as error:  # noqa: BLE001 - a bug must cost one request a 500, never the process
            log.error("unexpected error on %s: %r", scope["path"], error, exc_info=error)
            if not respond.started:
                await respond.error(GatewayError(500, "The gateway failed on this request; its log has the "
                                                 "details.", "server_error", "internal_error"))
        finally:
            flights.remove(flight)
            self.gateway.metrics.answered(labels[0], labels[1], self.endpoint, respond.status or CLIENT_GONE,
                                          time.perf_counter() - respond.started_s, respond.first_byte_s)


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
