"""Reading the gateway's /metrics page for `top`: the page the gateway's own Metrics writes, the families
CONTRACTS.md adds (held, migrated, tokens and requests per key name), counter resets, and the median of a
histogram between two readings."""

from __future__ import annotations

import pytest

from baremetal.cli.top.gateway_page import increase, quantile, read_counts, samples
from baremetal.gateway.metrics import Metrics

NEWER_FAMILIES = """\
# TYPE baremetal_gateway_held gauge
baremetal_gateway_held{model="chat"} 2
baremetal_gateway_migrated_total{model="chat"} 1
baremetal_gateway_retried_total{model="chat"} 4
baremetal_gateway_tokens_total{key="team-a",model="chat",kind="completion"} 120
baremetal_gateway_tokens_total{key="team-a",model="chat",kind="prompt"} 999
baremetal_gateway_tokens_total{key="-",model="chat",kind="completion"} 30
baremetal_gateway_key_requests_total{key="team-a",model="chat",status="200"} 7
baremetal_gateway_key_requests_total{key="team-a",model="chat",status="503"} 1
baremetal_gateway_rate_limited_total{key="team-a",limit="requests_per_minute"} 3
"""


def gateway_page() -> str:
    metrics = Metrics()
    for _ in range(3):
        metrics.started("chat", "vllm-a")
        metrics.answered("chat", "vllm-a", "chat", 200, 0.2, 0.04)
        metrics.stopped("chat", "vllm-a")
    metrics.answered("chat", "vllm-b", "chat", 502, 0.01, None)
    metrics.started("chat", "vllm-b")                       # one in flight
    metrics.answered("", "", "chat", 401, 0.0001, None)     # refused before a model was known
    metrics.answered("embed", "tei", "embeddings", 200, 0.01, 0.003)
    return metrics.render()


def test_samples_reads_labels_with_escapes():
    text = 'baremetal_gateway_in_flight{model="a\\"b",backend="x"} 3\n# a comment\nother_metric 1\n'
    assert list(samples(text)) == [("baremetal_gateway_in_flight", {"model": 'a"b', "backend": "x"}, 3.0)]


def test_counts_from_the_gateways_own_page():
    counts = read_counts(gateway_page(), 100.0)
    chat, embed = counts.models["chat"], counts.models["embed"]
    assert (chat.requests, chat.errors, chat.in_flight) == (4, 1, 1)
    assert "" not in counts.models                          # the refused request names no model
    assert chat.tokens is None and chat.held is None and chat.migrated is None    # not published by this gateway
    assert embed.requests == 1 and embed.errors == 0
    assert dict(chat.first_byte_buckets)[0.05] == 3         # three first bytes under 50 ms
    assert counts.keys == {}


def test_counts_of_the_newer_families():
    counts = read_counts(gateway_page() + NEWER_FAMILIES, 100.0)
    chat = counts.models["chat"]
    assert (chat.held, chat.migrated, chat.retried, chat.tokens) == (2, 1, 4, 150)
    team = counts.keys[("team-a", "chat")]
    assert (team.requests, team.errors, team.tokens) == (8, 1, 120)
    assert counts.keys[("team-a", "")].rate_limited == 3
    assert counts.keys[("-", "chat")].tokens == 30


@pytest.mark.parametrize("new, old, grown", [(10, 4, 6), (3, 10, 3), (5, None, 5), (None, 2, None)])
def test_increase_treats_a_smaller_counter_as_a_reset(new, old, grown):
    assert increase(new, old) == grown


def test_quantile_between_two_readings():
    old = ((0.01, 0.0), (0.1, 10.0), (1.0, 10.0), (float("inf"), 10.0))
    new = ((0.01, 0.0), (0.1, 10.0), (1.0, 14.0), (float("inf"), 14.0))
    assert quantile(0.5, new, old) == pytest.approx(0.1 + 0.9 * 0.5)    # the 4 new ones lie in (0.1, 1]
    assert quantile(0.5, new) == pytest.approx(0.01 + 0.09 * (7 / 10))   # since the start
    assert quantile(0.5, old, old) is None                              # nothing observed in between
    restarted = ((0.01, 1.0), (0.1, 1.0), (1.0, 1.0), (float("inf"), 1.0))
    assert quantile(0.5, restarted, old) == pytest.approx(0.005)          # reset: what the new one counted
    beyond = ((1.0, 0.0), (float("inf"), 2.0))
    assert quantile(0.5, beyond) == 1.0                                  # past the last bound: that bound
