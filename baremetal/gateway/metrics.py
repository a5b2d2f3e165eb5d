"""The gateway's Prometheus metrics, kept in memory and written in the text exposition format.

- baremetal_gateway_requests_total{model,backend,endpoint,status}: answered requests
- baremetal_gateway_request_duration_seconds{model,backend,endpoint}: until the last byte (histogram)
- baremetal_gateway_time_to_first_byte_seconds{model,backend,endpoint}: until the first body byte
  from the backend (for streams, about the time to first token)
- baremetal_gateway_in_flight{model,backend}: requests being served now
- baremetal_gateway_backend_errors_total{backend,reason}: refused connections, resets, bad answers
- baremetal_gateway_drained_total{model,backend}: requests that finished on a backend being drained
  for a planned stop (drain.json)
- baremetal_gateway_held{model}: requests waiting now for a replica that can take them (a gauge);
  baremetal_gateway_held_total{model}: requests that had to wait
- baremetal_gateway_retried_total{model}: requests sent again before their first byte (the backend
  failed, was found stuck, or answered 5xx)
- baremetal_gateway_migrated_total{model}: started streams continued on another (or a restarted) replica
- baremetal_gateway_migration_failed_total{model}: streams ended with an error event (api.migration_limit
  reached, no replica within api.hold_timeout, or a replayed answer that differs)
Requests refused before a backend is chosen (bad key, bad body, unknown model) have model="" and
backend="", so clients cannot grow the label set by sending made-up model names.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from baremetal.metrics import prometheus

DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 120.0, 300.0)

FAULT_COUNTERS = {
    "held_total": "Requests that waited for a replica that could take them.",
    "retried_total": "Requests sent again before their first byte.",
    "migrated_total": "Started streams continued on another or a restarted replica.",
    "migration_failed_total": "Streams ended with an error event because they could not be continued.",
}


@dataclass
class Histogram:
    buckets_s: tuple[float, ...] = DURATION_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_S) + 1))
    total_s: float = 0.0
    count: int = 0

    def observe(self, value_s: float) -> None:
        self.counts[bisect.bisect_left(self.buckets_s, value_s)] += 1
        self.total_s += value_s
        self.count += 1


class Metrics:
    """Counters of one gateway process (single event loop: plain dicts)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, int], int] = {}
        self.durations: dict[tuple[str, str, str], Histogram] = {}
        self.first_bytes: dict[tuple[str, str, str], Histogram] = {}
        self.in_flight: dict[tuple[str, str], int] = {}
        self.backend_errors: dict[tuple[str, str], int] = {}
        self.drained_counts: dict[tuple[str, str], int] = {}
        self.held: dict[str, int] = {}
        self.faults: dict[tuple[str, str], int] = {}    # (counter name, model) -> count: the fault counters

    def started(self, model: str, backend: str) -> None:
        key = (model, backend)
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def stopped(self, model: str, backend: str) -> None:
        self.in_flight[(model, backend)] -= 1

    def answered(self, model: str, backend: str, endpoint: str, status: int, duration_s: float,
                 first_byte_s: float | None) -> None:
        """One finished request (any outcome)."""
        key = (model, backend, endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if backend:
            self.durations.setdefault((model, backend, endpoint), Histogram()).observe(duration_s)
            if first_byte_s is not None:
                self.first_bytes.setdefault((model, backend, endpoint), Histogram()).observe(first_byte_s)

    def backend_error(self, backend: str, reason: str) -> None:
        key = (backend, reason)
        self.backend_errors[key] = self.backend_errors.get(key, 0) + 1

    def drained(self, model: str, backend: str) -> None:
        """A request finished on a draining backend."""
        key = (model, backend)
        self.drained_counts[key] = self.drained_counts.get(key, 0) + 1
    def hold(self, model: str) -> None:
        """A request starts waiting for a replica (held_total counts it once, by `count`)."""
        self.held[model] = self.held.get(model, 0) + 1

    def unhold(self, model: str) -> None:
        self.held[model] -= 1

    def count(self, counter: str, model: str) -> None:
        """One more of `counter` (held_total, retried_total, migrated_total, migration_failed_total)."""
        key = (counter, model)
        self.faults[key] = self.faults.get(key, 0) + 1

    def render(self) -> str:
        """The exposition text (format 0.0.4)."""
        lines = prometheus.family("baremetal_gateway_requests_total", "counter", "Requests answered by the gateway.",
                                  [(_labels(("model", "backend", "endpoint", "status"), key), value)
                                   for key, value in sorted(self.requests.items())])
        lines += self._histograms("baremetal_gateway_request_duration_seconds",
                                  "Time from the request to the last byte of the answer.", self.durations)
        lines += self._histograms("baremetal_gateway_time_to_first_byte_seconds",
                                  "Time from the request to the backend's first body byte.", self.first_bytes)
        lines += prometheus.family("baremetal_gateway_in_flight", "gauge", "Requests being served now.",
                                   [(_labels(("model", "backend"), key), value)
                                    for key, value in sorted(self.in_flight.items())])
        lines += prometheus.family("baremetal_gateway_backend_errors_total", "counter",
                                   "Backend failures seen by the gateway.",
                                   [(_labels(("backend", "reason"), key), value)
                                    for key, value in sorted(self.backend_errors.items())])
        lines += prometheus.family("baremetal_gateway_drained_total", "counter",
                                   "Requests that finished on a backend drained for a planned stop.",
                                   [(_labels(("model", "backend"), key), value)
                                    for key, value in sorted(self.drained_counts.items())])
        lines += prometheus.family("baremetal_gateway_held", "gauge", "Requests waiting now for a replica.",
                                   [(_labels(("model",), (model,)), value) for model, value in sorted(self.held.items())])
        for counter, help_text in FAULT_COUNTERS.items():
            lines += prometheus.family(f"baremetal_gateway_{counter}", "counter", help_text,
                                       [(_labels(("model",), (model,)), value)
                                        for (name, model), value in sorted(self.faults.items()) if name == counter])
        return prometheus.page(lines)

    @staticmethod
    def _histograms(name: str, help_text: str, histograms: dict[tuple[str, str, str], Histogram]) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for key, histogram in sorted(histograms.items()):
            lines += prometheus.histogram(name, tuple(zip(("model", "backend", "endpoint"), key)),
                                          histogram.buckets_s, histogram.counts, histogram.total_s, histogram.count)
        return lines


def _labels(names: tuple[str, ...], values: tuple) -> str:
    return prometheus.labels(tuple(zip(names, values)))
