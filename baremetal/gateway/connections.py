"""Client connections: how long a client may take to send its request, and how many may be open at once.

uvicorn bounds the idle time between requests of a kept-alive connection (5 s) but not the time a
client takes to send one: a connection that never finishes its headers (slowloris) was held for as long
as the client liked, with no key needed. `GuardedProtocol` is uvicorn's httptools protocol with two
limits added, read at each use from a `ClientLimits` that a reload (SIGHUP) may change:

- `client_timeout_s`: the request line and headers must arrive within it, counted from the connection
  (or from the first byte of the next request on a kept-alive one); the body must not pause longer than
  it. Past it the client gets a 408 and the connection is closed. Once the request is read, the answer
  (a long generation) has no such limit here: the backend idle timeout bounds that.
- `max_connections`: connections beyond it get a 503 and are closed at once, before any parsing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass
class ClientLimits:
    """The limits every connection reads (mutable: a reload replaces the values in place)."""

    client_timeout_s: float = 10.0
    max_connections: int = 4096


def _response(status: bytes, message: str, code: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"connection: close\r\n\r\n" + body)


def request_timeout_response(timeout_s: float) -> bytes:
    """408 in OpenAI's error shape, for a client that did not send its request in time."""
    return _response(b"408 Request Timeout", f"The request did not arrive within {timeout_s:g}s; send the "
                     "headers and body without pausing.", "request_timeout")


def too_many_connections_response(limit: int) -> bytes:
    """503 for a connection over the cap (the client may retry: Retry-After)."""
    return _response(b"503 Service Unavailable", f"The gateway holds its limit of {limit} open connections; "
                     "retry shortly.", "too_many_connections", b"retry-after: 1\r\n")


def guarded_protocol(limits: ClientLimits) -> type[HttpToolsProtocol]:
    """uvicorn's protocol class with `limits` applied (pass it as uvicorn.Config(http=...))."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a request deadline and a connection cap (see the module docstring)."""

    limits: ClientLimits = ClientLimits()
    _deadline = None            # asyncio.TimerHandle while a request is being read
    _refused = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        if len(self.server_state.connections) >= self.limits.max_connections:
            self._refused = True
            transport.write(too_many_connections_response(self.limits.max_connections))
            transport.close()
            return
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm()             # the body (if any) must keep coming

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.client_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle      # the request being read, or the previous one (complete) on a kept-alive connection
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(request_timeout_response(self.limits.client_timeout_s))
        self.transport.close()
