"""The FastChat worker protocol, spoken to model workers directly, and the controller's directory.

Worker endpoints (fschat 0.2.36, all POST with JSON): /worker_generate_stream (JSON objects separated
by NUL bytes, each with the whole text so far), /worker_get_embeddings, /count_token,
/worker_get_conv_template, /model_details. Controller: /list_models, /get_worker_address.
"""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from baremetal.gateway.conversation import Conversation
from baremetal.gateway.errors import GatewayError, bad_gateway, bad_request
from baremetal.gateway.routing import Backend
from baremetal.gateway.upstream import BackendFailed, BackendUnreachable, Upstream
from baremetal.gateway.witness import received

CACHE_TTL_S = 60.0
# fastchat.constants.ErrorCode values the gateway tells apart
CONTEXT_OVERFLOW = 40303


def worker_error(chunk: dict, backend: Backend) -> GatewayError:
    """A worker's {"error_code", "text"} as an OpenAI error: 4xxxx codes are the client's, others 502."""
    code = chunk.get("error_code", 0)
    text = str(chunk.get("text", "")).strip() or f"error code {code}"
    if code == CONTEXT_OVERFLOW:
        return bad_request(text, code="context_length_exceeded")
    if isinstance(code, int) and 40000 <= code < 50000:
        return bad_request(f"Worker {backend.name}: {text}")
    return bad_gateway(f"Worker {backend.name} of model {backend.model!r} failed: {text}")


class WorkerClient:
    """Calls to FastChat workers, with per-worker caches for what does not change while it runs."""

    def __init__(self, upstream: Upstream):
        self.upstream = upstream
        self._cache: dict[tuple[str, str, str], tuple[float, Any]] = {}

    async def _cached(self, backend: Backend, what: str, path: str, key: str) -> Any:
        cache_key = (backend.url, backend.model, what)
        hit = self._cache.get(cache_key)
        if hit and time.monotonic() - hit[0] < CACHE_TTL_S:
            return hit[1]
        answer = await self.upstream.post_json(backend.url + path, {"model": backend.model})
        if not isinstance(answer, dict) or key not in answer:
            raise BackendFailed(f"{path} answered without {key!r}")
        self._cache[cache_key] = (time.monotonic(), answer[key])
        return answer[key]

    async def conversation(self, backend: Backend) -> Conversation:
        """The worker's conversation template (FastChat's, chosen from the model path or --conv-template)."""
        return Conversation.from_json(await self._cached(backend, "conv", "/worker_get_conv_template", "conv"))

    async def context_length(self, backend: Backend) -> int:
        value = await self._cached(backend, "context", "/model_details", "context_length")
        return int(value) if isinstance(value, (int, float)) else 2048

    async def count_tokens(self, backend: Backend, prompt: str) -> int:
        answer = await self.upstream.post_json(backend.url + "/count_token", {"model": backend.model, "prompt": prompt})
        if not isinstance(answer, dict) or not isinstance(answer.get("count"), int):
            raise BackendFailed(f"/count_token answered {str(answer)[:200]}")
        return answer["count"]

    async def embeddings(self, backend: Backend, params: dict) -> dict:
        answer = await self.upstream.post_json(backend.url + "/worker_get_embeddings", params, timeout_s=None)
        if not isinstance(answer, dict):
            raise BackendFailed("/worker_get_embeddings answered something that is not an object")
        if answer.get("error_code"):
            raise worker_error(answer, backend)
        return answer

    @asynccontextmanager
    async def generate(self, backend: Backend, params: dict) -> AsyncIterator[AsyncIterator[dict]]:
        """`async with` the worker's output stream: each item is the whole output so far (a dict)."""
        upstream = self.upstream
        try:
            response = await upstream.post(backend.url + "/worker_generate_stream", json.dumps(params).encode(),
                                           {"Content-Type": "application/json"})
        except upstream.errors as error:
            raise upstream.classify(error) from None
        try:
            if response.status != 200:
                raise BackendFailed(f"/worker_generate_stream answered {response.status}")
            yield self._chunks(response, backend)
        finally:
            response.close()

    async def _chunks(self, response: Any, backend: Backend) -> AsyncIterator[dict]:
        buffer = b""
        try:
            async for data in response.content.iter_any():
                received()
                buffer += data
                while (end := buffer.find(b"\0")) >= 0:
                    chunk, buffer = buffer[:end], buffer[end + 1:]
                    if chunk:
                        decoded = json.loads(chunk)
                        if decoded.get("error_code"):
                            raise worker_error(decoded, backend)
                        yield decoded
        except self.upstream.errors as error:
            raise BackendFailed(f"the worker stream broke: {type(error).__name__}") from None
        except ValueError:
            raise BackendFailed("the worker sent a chunk that is not JSON") from None


class ControllerDirectory:
    """Models registered with the FastChat controller that the stack file does not list."""

    def __init__(self, upstream: Upstream, controller_url: str, refresh_s: float = 5.0):
        self.upstream = upstream
        self.controller_url = controller_url
        self.refresh_s = refresh_s
        self._checked_s = float("-inf")
        self.found: dict[str, tuple[Backend, ...]] = {}

    async def refresh(self, known: set[str]) -> dict[str, tuple[Backend, ...]]:
        """Ask the controller again (at most every `refresh_s`); a controller that is down changes nothing."""
        if time.monotonic() - self._checked_s < self.refresh_s:
            return self.found
        self._checked_s = time.monotonic()
        try:
            listed = await self.upstream.post_json(self.controller_url + "/list_models", {}, timeout_s=2.0)
            found = {}
            for name in listed.get("models", []) if isinstance(listed, dict) else []:
                if name in known:
                    continue
                address = await self.upstream.post_json(self.controller_url + "/get_worker_address",
                                                        {"model": name}, timeout_s=2.0)
                url = address.get("address", "") if isinstance(address, dict) else ""
                if url:
                    found[name] = (Backend(name, "fastchat", url.rstrip("/"), url.rstrip("/")),)
            self.found = found
        except (BackendUnreachable, BackendFailed):
            pass    # discovery is best effort: the stack's own routes keep working without the controller
        return self.found
