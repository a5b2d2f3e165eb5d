"""Bearer parsing, the key table (names, digests, x-api-key), and the Prometheus text format."""

from __future__ import annotations

import pytest

from baremetal.config.model import Api, ApiKey
from baremetal.errors import BaremetalError
from baremetal.gateway.keys import OPEN, KeyTable, bearer_token, key_table
from baremetal.gateway.metrics import Metrics
from baremetal.gateway.usage import Usage, UsageBook

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


def api(api_keys=(), named=()) -> Api:
    return Api(kind="gateway", host="127.0.0.1", port=8000, api_keys=tuple(api_keys), env="fastchat",
               named_keys=tuple(named))


def test_keys_identify_who_calls(tmp_path, monkeypatch):
    (tmp_path / "batch").write_text("# batch jobs\nb1\nb2\n")
    monkeypatch.setenv("TEAM_A_KEY", "secret-a")
    table = key_table(api(["k1", "k2"], [ApiKey("team-a", "env:TEAM_A_KEY", ("gpt-4",), 10, None, 2),
                                         ApiKey("batch", f"file:{tmp_path / 'batch'}")]))
    assert table.identify("Bearer k2") == OPEN                         # api_keys: unnamed, unlimited
    team = table.identify("Bearer secret-a")
    assert (team.name, team.allows("gpt-4"), team.allows("bge-m3"), team.limited) == ("team-a", True, False, True)
    assert table.identify(None, "b2").name == "batch"                  # Anthropic's x-api-key header
    for wrong in ("Bearer k3", "Bearer k1x", "Bearer secret-", None, "Basic k1"):
        assert table.identify(wrong) is None
    assert table.names() == ["batch", "team-a"]
    assert all(len(digest) == 32 for digest, _ in table.entries)     # digests only, never the keys
    assert KeyTable([]).identify(None) == OPEN                         # no keys configured: open


def test_key_problems_name_the_field(monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(BaremetalError, match=r"api.key\[0\] \(team-a\): environment variable NOT_SET_ANYWHERE"):
        key_table(api([], [ApiKey("team-a", "env:NOT_SET_ANYWHERE")]))
    monkeypatch.setenv("SAME", "k1")
    with pytest.raises(BaremetalError, match=r"api.key\[0\] \(b\): one of its keys is also a key of api.api_keys") \
            as caught:
        key_table(api(["k1"], [ApiKey("b", "env:SAME")]))
    assert "k1" not in str(caught.value)


def test_usage_metrics_per_key():
    book = UsageBook()
    book.answered("team-a", "tiny-chat", 200, Usage(25, 16))
    book.answered("team-a", "tiny-chat", 200, Usage(5, 0))
    book.answered("-", "", 404, Usage())
    book.rate_limited("team-a", "requests_per_minute")
    lines = book.render_lines()
    assert 'baremetal_gateway_key_requests_total{key="team-a",model="tiny-chat",status="200"} 2' in lines
    assert 'baremetal_gateway_key_requests_total{key="-",model="",status="404"} 1' in lines
    assert 'baremetal_gateway_tokens_total{key="team-a",model="tiny-chat",kind="prompt"} 30' in lines
    assert 'baremetal_gateway_tokens_total{key="team-a",model="tiny-chat",kind="completion"} 16' in lines
    assert 'baremetal_gateway_rate_limited_total{key="team-a",limit="requests_per_minute"} 1' in lines


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
