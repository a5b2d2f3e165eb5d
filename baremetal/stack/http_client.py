"""A small HTTP client on the standard library, for the probes of `status`, `up` and `restart`.

It offers the part of httpx.Client's interface that probes.py uses (`get`/`post` with `timeout`, `json`,
`headers`; a response with `status_code`, `text`, `json()`), so either client fits the probe seam.
Importing httpx costs ~55 ms and its client builds an SSL context (~100 ms) even for plain http; the
CLI's probes go to this host, mostly over plain http, and http.client is already loaded by XML-RPC.
"""

from __future__ import annotations

import http.client
import json as jsonlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    """What a probe reads from an answer."""

    status_code: int
    text: str

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON (as httpx's)."""
        return jsonlib.loads(self.text)


class LiteClient:
    """One request per connection, never through a proxy (probes talk to this host)."""

    def get(self, url: str, timeout: float, headers: dict | None = None) -> Response:
        """GET `url`; raises OSError subclasses (ConnectionRefusedError, TimeoutError) on failure."""
        return self._request("GET", url, timeout, None, headers or {})

    def post(self, url: str, timeout: float, json: Any = None, headers: dict | None = None) -> Response:
        """POST `json` (or an empty body) to `url`."""
        return self._request("POST", url, timeout, json, headers or {})

    @staticmethod
    def _request(method: str, url: str, timeout_s: float, payload: Any, headers: dict) -> Response:
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        if parts.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(host, parts.port or 443,
                                                                                 timeout=timeout_s)
        elif parts.scheme == "http":
            connection = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout_s)
        else:
            raise ValueError(f"not an http(s) URL: {url!r}")
        body = jsonlib.dumps(payload).encode() if payload is not None else b""
        sent = {"Content-Type": "application/json"} if payload is not None else {}
        sent.update(headers)
        try:
            target = parts.path or "/"
            connection.request(method, target + (f"?{parts.query}" if parts.query else ""), body=body, headers=sent)
            answer = connection.getresponse()
            return Response(answer.status, answer.read().decode("utf-8", errors="replace"))
        finally:
            connection.close()
