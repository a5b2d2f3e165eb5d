"""Bearer parsing and the Prometheus text format."""

from __future__ import annotations

import pytest

from baremetal.gateway.auth import authorized, bearer_token
from baremetal.gateway.metrics import Metrics

HEADERS = {
    "bearer": ("Bearer k1", "k1"),
    "scheme in any case": ("bearer k1", "k1"),
    "extra spaces": ("  Bearer   k1  ", "k1"),
    "basic scheme": ("Basic k1", None),
    "no token": ("Bearer ", None),
    "missing": (None, None),
}


@pytest.mark.parametrize("header, token", HEADERS.values(), ids=HEADERS.keys())
def test_bearer_token(header, token):
    assert bearer_token(header) == token


def test_authorized():
    assert authorized(None, [])                        # no keys configured: open
    assert authorized("Bearer k2", ["k1", "k2"])
    assert not authorized("Bearer k3", ["k1", "k2"])
    assert not authorized(None, ["k1"])
    assert not authorized("Bearer k1x", ["k1"])


def test_metrics_text():
    metrics = Metrics()
    metrics.started("chat", "vllm-a")
    metrics.answered("chat", "vllm-a", "chat", 200, 0.003, 0.001)
    metrics.stopped("chat", "vllm-a")
    metrics.started("chat", 'odd"name')
    metrics.answered("", "", "chat", 401, 0.0001, None)
    metrics.backend_error("vllm-b", "unreachable")
    lines = metrics.render().splitlines()
    assert 'baremetal_gateway_requests_total{model="chat",backend="vllm-a",endpoint="chat",status="200"} 1' in lines
    assert 'baremetal_gateway_requests_total{model="",backend="",endpoint="chat",status="401"} 1' in lines
    bucket = 'baremetal_gateway_request_duration_seconds_bucket{model="chat",backend="vllm-a",endpoint="chat",le='
    assert f'{bucket}"0.0025"}} 0' in lines and f'{bucket}"0.005"}} 1' in lines and f'{bucket}"+Inf"}} 1' in lines
    assert 'baremetal_gateway_time_to_first_byte_seconds_count{model="chat",backend="vllm-a",endpoint="chat"} 1' in lines
    assert 'baremetal_gateway_in_flight{model="chat",backend="vllm-a"} 0' in lines
    assert 'baremetal_gateway_in_flight{model="chat",backend="odd\\"name"} 1' in lines
    assert 'baremetal_gateway_backend_errors_total{backend="vllm-b",reason="unreachable"} 1' in lines
    assert "# TYPE baremetal_gateway_request_duration_seconds histogram" in lines
