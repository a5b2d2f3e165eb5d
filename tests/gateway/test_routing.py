"""Route table from a stack file, and replica ordering: least in flight, rotation among ties, watchdog
verdicts, back-off after refused connections. Pure."""

from __future__ import annotations

import pytest

from baremetal.config import load_stack
from baremetal.gateway.health import Verdict
from baremetal.gateway.routing import Backend, BackendState, Balancer, order_backends, routes_from_stack


def test_routes_from_stack(write_stack, short_tmp):
    stack = load_stack(write_stack('''
        [stack]
        name = "r"
        models_dir = "models"
        [watchdog]
        enabled = false
        [[model]]
        name = "chat"
        path = "qwen"
        program = "chat-a"
        port = 8101
        [[model]]
        name = "chat"
        path = "qwen"
        program = "chat-b"
        port = 8102
        [[model]]
        name = "old"
        path = "vicuna"
        engine = "fastchat"
        port = 8103
        args = ["--conv-template", "vicuna_v1.1"]
        [[program]]
        name = "tei"
        command = ["tei"]
        serves = { model = "gte", task = "embed", url = "http://127.0.0.1:8081/" }
    '''))
    routes = routes_from_stack(stack)
    assert [b.name for b in routes["chat"]] == ["chat-a", "chat-b"]
    assert [b.url for b in routes["chat"]] == ["http://127.0.0.1:8101", "http://127.0.0.1:8102"]
    assert routes["chat"][0].kind == "vllm" and routes["chat"][0].model_dir == short_tmp / "models" / "qwen"
    old = routes["old"][0]
    assert (old.kind, old.name, old.worker_template) == ("fastchat", "fastchat-old", True)
    assert routes["gte"] == (Backend("gte", "program", "http://127.0.0.1:8081", "tei", "embed"),)


A, B, C = (Backend("m", "vllm", f"http://127.0.0.1:{port}", name) for port, name in ((1, "a"), (2, "b"), (3, "c")))

# states, unhealthy, now -> (order, skipped)
CASES = {
    "fresh: stack order": ({}, {}, (["a", "b", "c"], [])),
    "fewest in flight first": ({"a": BackendState(in_flight=3), "b": BackendState(in_flight=1)}, {},
                               (["c", "b", "a"], [])),
    "ties: least recently picked": ({"a": BackendState(picked_seq=9), "b": BackendState(picked_seq=4),
                                     "c": BackendState(picked_seq=7)}, {}, (["b", "c", "a"], [])),
    "watchdog verdict skips": ({}, {"b": Verdict("stuck")}, (["a", "c"], ["b: watchdog says stuck"])),
    "ready but failing probes: last resort": ({"c": BackendState(down_until_s=105.0)}, {"a": Verdict("ready")},
                                              (["b", "c", "a"], [])),
    "backing off goes last": ({"a": BackendState(down_until_s=105.0)}, {}, (["b", "c", "a"], [])),
    "back-off over: back in line": ({"a": BackendState(down_until_s=99.0)}, {}, (["a", "b", "c"], [])),
    "several backing off: soonest first": ({"a": BackendState(down_until_s=130.0), "b": BackendState(down_until_s=110.0)},
                                           {}, (["c", "b", "a"], [])),
    "all unhealthy": ({}, {"a": Verdict("loading"), "b": Verdict("stuck"), "c": Verdict("failed")},
                      ([], ["a: watchdog says loading", "b: watchdog says stuck", "c: watchdog says failed"])),
}


@pytest.mark.parametrize("states, unhealthy, expected", CASES.values(), ids=CASES.keys())
def test_order_backends(states, unhealthy, expected):
    order, skipped = order_backends((A, B, C), states, unhealthy, now_s=100.0)
    assert ([b.name for b in order], skipped) == expected


def test_balancer_rotates_sequential_requests_and_counts_in_flight():
    balancer = Balancer()
    picks = []
    for _ in range(4):
        first = balancer.plan((A, B), {}, 0.0)[0][0]
        balancer.started(first)
        balancer.finished(first)
        picks.append(first.name)
    assert picks == ["a", "b", "a", "b"]
    balancer.started(A)
    assert balancer.plan((A, B), {}, 0.0)[0][0] is B


def test_balancer_backs_off_exponentially_and_forgives_on_answer():
    balancer = Balancer()
    downs = []
    for _ in range(7):
        balancer.refused(A, 100.0, "connection refused")
        downs.append(balancer.state(A).down_until_s - 100.0)
    assert downs == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    balancer.answered(A)
    assert balancer.state(A).down_until_s == 0.0 and balancer.state(A).failures == 0


def test_the_owner_of_a_response_is_remembered_newest_first_out_last():
    from baremetal.gateway.routing import Backend, ResponseOwners

    owners = ResponseOwners(size=2)
    a, b = Backend("m", "vllm", "http://a", "vllm-a"), Backend("m", "vllm", "http://b", "vllm-b")
    owners.remember("resp_1", a)
    owners.remember("resp_2", b)
    owners.remember("resp_1", a)            # seen again: now the newest
    owners.remember("resp_3", b)
    assert (owners.owner("resp_1"), owners.owner("resp_2"), owners.owner("resp_3")) == (a, None, b)
