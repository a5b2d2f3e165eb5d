"""Prometheus metrics of the watchdog: GPU gauges, program health, restarts, probe latency.

Served as text (exposition format 0.0.4) on watchdog.metrics_host:metrics_port at /metrics, by a small
threaded HTTP server; `render` is pure and builds the page from the same documents as the state file.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from baremetal.metrics.prometheus import CONTENT_TYPE, family, labels, page

GPU_GAUGES = (
    ("temperature_c", "baremetal_gpu_temperature_celsius", "GPU temperature", 1.0),
    ("memory_used_bytes", "baremetal_gpu_memory_used_bytes", "GPU memory in use", 1.0),
    ("memory_total_bytes", "baremetal_gpu_memory_total_bytes", "GPU memory size", 1.0),
    ("utilization_gpu_percent", "baremetal_gpu_utilization_ratio", "Share of time a kernel ran (0-1)", 0.01),
    ("power_w", "baremetal_gpu_power_watts", "Power draw", 1.0),
    ("power_limit_w", "baremetal_gpu_power_limit_watts", "Enforced power limit", 1.0),
    ("ecc_uncorrected_volatile", "baremetal_gpu_ecc_uncorrected_errors", "Uncorrectable ECC errors since the driver loaded", 1.0),
    ("ecc_corrected_volatile", "baremetal_gpu_ecc_corrected_errors", "Corrected ECC errors since the driver loaded", 1.0),
    ("remapped_rows_uncorrectable", "baremetal_gpu_remapped_rows_uncorrectable", "Rows remapped after uncorrectable errors", 1.0),
    ("remap_pending", "baremetal_gpu_remap_pending", "1 when remapped rows wait for a GPU reset", 1.0),
    ("remap_failure", "baremetal_gpu_remap_failure", "1 when row remapping failed", 1.0),
)


def render(programs: dict[str, dict], gpus: list[dict], watchdog: dict[str, float],
           xid_counts: dict[tuple[int | None, int], int], hangs: dict[tuple[str, str], int] | None = None,
           cordoned: frozenset[int] = frozenset()) -> str:
    """The /metrics page."""
    lines: list[str] = []
    lines += family("baremetal_watchdog_ticks_total", "counter", "Probe cycles run", [("", watchdog["ticks"])])
    lines += family("baremetal_watchdog_tick_seconds", "gauge", "Wall time of the last probe cycle",
                    [("", watchdog["tick_s"])])
    lines += family("baremetal_watchdog_cpu_seconds_total", "counter", "CPU time the watchdog used",
                    [("", watchdog["cpu_s"])])
    lines += family("baremetal_program_healthy", "gauge", "1 when the program is ready and its last probe passed",
                    [(labels(program=name), 1.0 if p.get("healthy") else 0.0) for name, p in programs.items()])
    lines += family("baremetal_program_phase", "gauge", "1 for the program's current phase",
                    [(labels(program=name, phase=p.get("phase")), 1.0) for name, p in programs.items()])
    lines += family("baremetal_program_restarts_total", "counter", "Restarts seen (by the watchdog or supervisord)",
                    [(labels(program=name), p.get("restarts", 0)) for name, p in programs.items()])
    lines += family("baremetal_program_probe_latency_seconds", "gauge", "Latency of the last liveness probe",
                    [(labels(program=name), p["probe_latency_s"]) for name, p in programs.items()
                     if p.get("probe_latency_s") is not None])
    lines += family("baremetal_program_probe_failures", "gauge", "Liveness probes failed in a row",
                    [(labels(program=name), p.get("probe_failures", 0)) for name, p in programs.items()])
    for key, name, text, scale in GPU_GAUGES:
        lines += family(name, "gauge", text, [(labels(gpu=g["index"], uuid=g.get("uuid") or ""), g[key] * scale)
                                              for g in gpus if g.get(key) is not None])
    lines += family("baremetal_gpu_throttled", "gauge", "1 per active clock throttle reason",
                    [(labels(gpu=g["index"], reason=reason), 1.0) for g in gpus
                     for reason in g.get("throttle_reasons") or ()])
    lines += family("baremetal_gpu_xid_events_total", "counter", "Xid critical errors received",
                    [(labels(gpu="" if gpu is None else gpu, xid=xid), count)
                     for (gpu, xid), count in sorted(xid_counts.items(), key=str)])
    lines += family("baremetal_program_hangs_total", "counter", "Restarts and stops for a hang, by its kind",
                    [(labels(program=name, kind=kind), count) for (name, kind), count in sorted((hangs or {}).items())])
    lines += family("baremetal_program_hang", "gauge", "1 for the kind of the program's current or last hang",
                    [(labels(program=name, kind=p["hang_kind"]), 1.0) for name, p in programs.items()
                     if p.get("hang_kind")])
    lines += family("baremetal_program_evidence_seconds", "gauge", "Time the last evidence added before the stop",
                    [(labels(program=name), p["evidence_s"]) for name, p in programs.items()
                     if p.get("evidence_s") is not None])
    lines += family("baremetal_gpu_cordoned", "gauge", "1 for a cordoned GPU (no program is started on it)",
                    [(labels(gpu=gpu), 1.0) for gpu in sorted(cordoned)])
    return page(lines)


class MetricsServer:
    """Serves `page()` at /metrics in a background thread; bind errors surface from `start`."""

    def __init__(self, host: str, port: int, page: Callable[[], str]):
        page_function = page

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "see /metrics")
                    return
                body = page_function().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes are not news
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
