"""Prometheus metrics: the page's content, and the real HTTP server a scraper reads."""

from __future__ import annotations

import httpx

from baremetal.watchdog.metrics import MetricsServer, render
from tests.support.ports import free_port

PROGRAMS = {"vllm-chat": {"phase": "ready", "healthy": True, "restarts": 2, "probe_latency_s": 0.0012,
                          "probe_failures": 0},
            'odd"name': {"phase": "stuck", "healthy": False, "restarts": 0, "probe_latency_s": None}}
GPUS = [{"index": 0, "uuid": "GPU-a", "temperature_c": 61, "memory_used_bytes": 1024, "utilization_gpu_percent": 50,
         "power_w": None, "throttle_reasons": ["hw_thermal"]}]


def test_page_has_program_health_restarts_latency_and_gpu_gauges():
    page = render(PROGRAMS, GPUS, {"ticks": 7, "tick_s": 0.004, "cpu_s": 0.5}, {(0, 79): 1})
    lines = set(page.splitlines())
    assert 'baremetal_program_healthy{program="vllm-chat"} 1' in lines
    assert 'baremetal_program_phase{program="odd\\"name",phase="stuck"} 1' in lines
    assert 'baremetal_program_restarts_total{program="vllm-chat"} 2' in lines
    assert 'baremetal_program_probe_latency_seconds{program="vllm-chat"} 0.0012' in lines
    assert 'baremetal_gpu_temperature_celsius{gpu="0",uuid="GPU-a"} 61' in lines
    assert 'baremetal_gpu_utilization_ratio{gpu="0",uuid="GPU-a"} 0.5' in lines
    assert 'baremetal_gpu_throttled{gpu="0",reason="hw_thermal"} 1' in lines
    assert 'baremetal_gpu_xid_events_total{gpu="0",xid="79"} 1' in lines
    assert not any(line.startswith("baremetal_gpu_power_watts{") for line in lines)     # None is left out
    assert "baremetal_watchdog_ticks_total 7" in lines


def test_server_serves_the_page():
    port = free_port()
    server = MetricsServer("127.0.0.1", port, lambda: "up 1\n")
    server.start()
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False)
        assert response.status_code == 200 and response.text == "up 1\n"
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert httpx.get(f"http://127.0.0.1:{port}/other", trust_env=False).status_code == 404
    finally:
        server.stop()
