"""One probe per server kind: the cheapest request that proves the server works.

`probe(spec, ...)` never raises: it returns a ProbeResult. `deep=True` (readiness: `baremetal up`) makes a
real request to the engine (a 1-token completion, a one-word embedding, a one-document rerank), which
proves the engine core works; `deep=False` (liveness, every watchdog tick) stays on cheap endpoints.
The HTTP client is the seam: pass any object with httpx.Client's `get`/`post`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from baremetal.plan.spec import Probe


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_s: float
    detail: str                 # why it failed, or a short success note
    status_code: int | None = None
    body: Any = None            # the answer (parsed JSON, or text), e.g. a FastChat worker's queue length


def _request(client: Any, method: str, url: str, timeout_s: float, **kwargs: Any) -> tuple[int, Any]:
    response = getattr(client, method)(url, timeout=timeout_s, **kwargs)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body


def _vllm(spec: Probe, client: Any, timeout_s: float, deep: bool, headers: dict) -> tuple[int, Any, str]:
    status, body = _request(client, "get", f"{spec.url}/health", timeout_s)
    if status != 200 or not deep:
        return status, body, "/health"
    if spec.task == "embed":
        payload, path = {"model": spec.model, "input": "ping"}, "/v1/embeddings"
    elif spec.task == "rerank":
        payload, path = {"model": spec.model, "query": "ping", "documents": ["pong"]}, "/v1/rerank"
    else:
        payload, path = {"model": spec.model, "prompt": "ping", "max_tokens": 1, "temperature": 0}, "/v1/completions"
    status, body = _request(client, "post", spec.url + path, timeout_s, json=payload, headers=headers)
    return status, body, path


def _fastchat_worker(spec: Probe, client: Any, timeout_s: float, deep: bool, headers: dict) -> tuple[int, Any, str]:
    status, body = _request(client, "post", f"{spec.url}/worker_get_status", timeout_s)
    if status == 200 and isinstance(body, dict) and spec.model not in body.get("model_names", []):
        return 599, f"worker serves {body.get('model_names')}, not {spec.model!r}", "/worker_get_status"
    return status, body, "/worker_get_status"


def _controller(spec: Probe, client: Any, timeout_s: float, deep: bool, headers: dict) -> tuple[int, Any, str]:
    status, body = _request(client, "post", f"{spec.url}/list_models", timeout_s)
    return status, body, "/list_models"


def _openai(spec: Probe, client: Any, timeout_s: float, deep: bool, headers: dict) -> tuple[int, Any, str]:
    status, body = _request(client, "get", f"{spec.url}/v1/models", timeout_s, headers=headers)
    return status, body, "/v1/models"


def _http(spec: Probe, client: Any, timeout_s: float, deep: bool, headers: dict) -> tuple[int, Any, str]:
    status, body = _request(client, "get", spec.url, timeout_s)
    return status, body, spec.url


PROBES = {"vllm": _vllm, "fastchat-worker": _fastchat_worker, "controller": _controller,
          "openai": _openai, "http": _http}


def probe(spec: Probe, client: Any, timeout_s: float = 2.0, deep: bool = False,
          api_key: str | None = None, request_id: str | None = None) -> ProbeResult:
    """Run the probe for `spec.kind`; any error or non-2xx answer is a failed result, never an exception.
    `request_id` marks the request (X-Request-Id), e.g. the watchdog's canaries."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if request_id:
        headers["X-Request-Id"] = request_id
    started = time.monotonic()
    try:
        status, body, what = PROBES[spec.kind](spec, client, timeout_s, deep, headers)
    except Exception as error:  # noqa: BLE001 - a probe reports every failure as a result
        return ProbeResult(False, time.monotonic() - started, _describe(error))
    latency = time.monotonic() - started
    if 200 <= status < 300:
        return ProbeResult(True, latency, f"{what} {status}", status, body)
    text = body if isinstance(body, str) else str(body)
    return ProbeResult(False, latency, f"{what} answered {status}: {text[:200]}", status, body)


def _describe(error: Exception) -> str:
    name = type(error).__name__
    if "Timeout" in name:
        return f"no answer within the probe timeout ({name})"
    if "Connect" in name:
        return "connection refused (not listening yet, or dead)"
    return f"{name}: {error}"[:300]
