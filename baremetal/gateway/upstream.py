"""The HTTP client seam between the gateway and its backends (aiohttp).

aiohttp rather than httpx: through the same proxy on this machine, httpx's AsyncClient managed 340
requests/s at 64 concurrent requests (p99 1.4 s, its connection pool serialises) against aiohttp's
3,700; at concurrency 1 it added 0.9 ms against 0.4 ms (scripts/bench_gateway.py measures the gateway).

Failures are sorted by what the gateway may do next: `BackendUnreachable` before the backend saw the
request (try another replica; `same_again` when a pooled keep-alive connection had gone stale, which
happens after a backend restarts), `BackendFailed` afterwards (answer 502).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class BackendUnreachable(Exception):
    """The request never reached the backend (refused, reset before the answer started)."""

    def __init__(self, reason: str, same_again: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.same_again = same_again


class BackendFailed(Exception):
    """The backend took the request and then failed (bad answer, dropped connection, timeout)."""


class BackendTimedOut(BackendFailed):
    """The backend took the request and then sent nothing for longer than the idle timeout."""


CONNECT_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 600.0
# uvicorn (vLLM, FastChat) closes idle keep-alive connections after 5 s; dropping ours sooner avoids
# sending on a connection the server is closing.
KEEPALIVE_S = 4.0


class Upstream:
    """One aiohttp session for every backend; create and close it inside the server's event loop.

    Two time limits, changeable while it runs (`set_timeouts`, on a reload): a backend must accept the
    TCP connection within `connect_timeout_s` (else the request never reached it: another replica may
    take it), and may send nothing for at most `idle_timeout_s` once it has the request: before the
    answer starts, between two streamed chunks, or while a whole answer is computed (it arrives in one
    piece when done). A long generation that keeps streaming is never cut."""

    def __init__(self, connect_timeout_s: float = CONNECT_TIMEOUT_S, idle_timeout_s: float = IDLE_TIMEOUT_S):
        import aiohttp

        self._aiohttp = aiohttp
        self.set_timeouts(connect_timeout_s, idle_timeout_s)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=None),
            timeout=self._timeout, auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"))

    def set_timeouts(self, connect_timeout_s: float, idle_timeout_s: float) -> None:
        self.connect_timeout_s, self.idle_timeout_s = connect_timeout_s, idle_timeout_s
        self._timeout = self._aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s,
                                                    sock_read=idle_timeout_s)

    async def close(self) -> None:
        await self.session.close()

    def post(self, url: str, body: bytes, headers: dict[str, str]):
        """An `async with` context giving aiohttp's response (status, headers, `.content` to stream)."""
        return self.session.post(url, data=body, headers=headers, timeout=self._timeout)

    def classify(self, error: BaseException) -> Exception:
        """A client exception raised before the answer started, as BackendUnreachable or BackendFailed."""
        aiohttp = self._aiohttp
        if isinstance(error, aiohttp.ConnectionTimeoutError):
            return BackendUnreachable(f"no connection within {self.connect_timeout_s:g}s")
        if isinstance(error, aiohttp.SocketTimeoutError):
            return BackendTimedOut(f"nothing received for {self.idle_timeout_s:g}s")
        if isinstance(error, aiohttp.ClientConnectorError):
            return BackendUnreachable(f"connection refused ({error.os_error.strerror or error.os_error})")
        if isinstance(error, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            return BackendUnreachable(f"connection dropped ({type(error).__name__})", same_again=True)
        if isinstance(error, asyncio.TimeoutError):
            return BackendFailed("the backend did not answer in time")
        return BackendFailed(f"{type(error).__name__}: {error}")

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions of the client library worth catching around a call."""
        return (self._aiohttp.ClientError, asyncio.TimeoutError)

    async def post_json(self, url: str, payload: Any, timeout_s: float | None = 60.0) -> Any:
        """POST JSON, return the decoded JSON answer (control calls: worker templates, token counts)."""
        aiohttp = self._aiohttp
        try:
            async with self.session.post(url, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"},
                                         timeout=aiohttp.ClientTimeout(total=timeout_s,
                                                                       sock_connect=self.connect_timeout_s)) as response:
                text = await response.read()
                if response.status >= 400:
                    raise BackendFailed(f"{url} answered {response.status}: {text[:200]!r}")
        except self.errors as error:
            raise self.classify(error) from None
        return _parsed(url, text)

    async def get_json(self, url: str, timeout_s: float) -> Any:
        """GET JSON (model facts, versions); None when the backend has no such endpoint (404, 405)."""
        aiohttp = self._aiohttp
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s,
                                                                           sock_connect=CONNECT_TIMEOUT_S)) as response:
                text = await response.read()
                if response.status in (404, 405):
                    return None
                if response.status >= 400:
                    raise BackendFailed(f"{url} answered {response.status}: {text[:200]!r}")
        except self.errors as error:
            raise self.classify(error) from None
        return _parsed(url, text)

    async def forward(self, method: str, url: str, headers: dict[str, str], body: bytes = b"",
                      timeout_s: float = 60.0) -> tuple[int, str, bytes]:
        """One small request passed on whole: (status, content type, body)."""
        aiohttp = self._aiohttp
        try:
            async with self.session.request(method, url, data=body or None, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=timeout_s,
                                                                          sock_connect=CONNECT_TIMEOUT_S)) as response:
                return response.status, response.headers.get("Content-Type", "application/json"), await response.read()
        except self.errors as error:
            raise self.classify(error) from None


def _parsed(url: str, text: bytes) -> Any:
    """A backend's JSON answer, or BackendFailed saying it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        raise BackendFailed(f"{url} answered something that is not JSON: {text[:200]!r}") from None
