"""The bookkeeping of faults, pure: which backends can take a request (verdicts, drains, backends that
just failed it), when holding is pointless, the clock of a held request, which requests in flight the
monitor gives up on, drain.json, and the worker request for the rest of a FastChat answer."""

from __future__ import annotations

import json

import pytest

from baremetal.gateway.draining import DrainReader, draining_programs
from baremetal.gateway.flights import Flight, to_abandon
from baremetal.gateway.health import Verdict
from baremetal.gateway.hold import FIRST_COMMENT_S, HeldRequest, candidates, down_for_good, keepalive_comment
from baremetal.gateway.resume import joined, rest_params
from baremetal.gateway.routing import Backend, BackendState

A, B = Backend("chat", "vllm", "http://a", "chat-a"), Backend("chat", "vllm", "http://b", "chat-b")
BOTH = (A, B)
NOW = 1000.0

CANDIDATES = {
    "both can": ({}, frozenset(), {}, ["chat-a", "chat-b"], []),
    "one stuck": ({"chat-a": Verdict("stuck")}, frozenset(), {}, ["chat-b"], ["chat-a: watchdog says stuck"]),
    "one draining": ({}, frozenset({"chat-b"}), {}, ["chat-a"], ["chat-b: draining"]),
    "one just failed this request": ({}, frozenset(), {"chat-a": "connection refused"}, ["chat-b"],
                                     ["chat-a: connection refused"]),
    "failing probes is still a last resort": ({"chat-a": Verdict("ready"), "chat-b": Verdict("restarting")},
                                              frozenset(), {}, ["chat-a"], ["chat-b: watchdog says restarting"]),
    "none": ({"chat-a": Verdict("loading")}, frozenset({"chat-b"}), {}, [],
             ["chat-a: watchdog says loading", "chat-b: draining"]),
}


@pytest.mark.parametrize("unhealthy, draining, avoid, found, skipped", CANDIDATES.values(), ids=CANDIDATES.keys())
def test_candidates(unhealthy, draining, avoid, found, skipped):
    states = {"chat-a": BackendState(in_flight=1), "chat-b": BackendState()}
    got, why = candidates(BOTH, states, unhealthy, draining, avoid, NOW)
    assert sorted(b.name for b in got) == found and why == skipped


def test_candidates_keep_the_balancers_order():
    states = {"chat-a": BackendState(in_flight=3), "chat-b": BackendState(in_flight=1)}
    assert [b.name for b in candidates(BOTH, states, {}, frozenset(), {}, NOW)[0]] == ["chat-b", "chat-a"]


FOR_GOOD = {
    "restarting comes back": ({"chat-a": Verdict("restarting"), "chat-b": Verdict("stopped")}, frozenset(), False),
    "all stopped or given up": ({"chat-a": Verdict("given_up"), "chat-b": Verdict("stopped")}, frozenset(), True),
    "hardware fault": ({"chat-a": Verdict("hardware_fault"), "chat-b": Verdict("hardware_fault")}, frozenset(), True),
    "stopped for a restart that drains": ({"chat-a": Verdict("stopped"), "chat-b": Verdict("stopped")},
                                          frozenset({"chat-a"}), False),
    "one healthy": ({"chat-a": Verdict("stopped")}, frozenset(), False),
}


@pytest.mark.parametrize("unhealthy, draining, expected", FOR_GOOD.values(), ids=FOR_GOOD.keys())
def test_down_for_good(unhealthy, draining, expected):
    assert down_for_good(BOTH, unhealthy, draining) is expected


def test_a_held_stream_is_told_after_a_second_then_every_few_seconds():
    held = HeldRequest(since_s=NOW, timeout_s=120, stream=True)
    assert not held.comment_due(NOW + FIRST_COMMENT_S / 2) and held.comment_due(NOW + FIRST_COMMENT_S)
    held.commented_s = NOW + 1
    assert not held.comment_due(NOW + 5) and held.comment_due(NOW + 6)
    assert not held.expired(NOW + 119.9) and held.expired(NOW + 120) and held.waited_s(NOW + 3) == 3
    assert not HeldRequest(NOW, 120, stream=False).comment_due(NOW + 60)       # whole answers wait silently
    comment = keepalive_comment("tiny-chat", ["chat-a: watchdog says restarting\nnext"])
    assert comment.startswith(b": ") and comment.endswith(b"\n\n") and comment.count(b"\n") == 2


def flight(backend=A, stream=True, waited_s=1.0, sending=False) -> Flight:
    return Flight("chat", stream, backend=backend, waiting_since_s=NOW - waited_s, sending=sending)


ABANDON = {
    "healthy and recent": (flight(), {}, None),
    "its backend stuck": (flight(), {"chat-a": Verdict("stuck")}, "watchdog says stuck while it waited 1.0 s"),
    "a whole answer, backend restarting": (flight(stream=False), {"chat-a": Verdict("restarting")},
                                           "watchdog says restarting while it waited 1.0 s"),
    "failing probes only": (flight(), {"chat-a": Verdict("ready")}, None),
    "another backend stuck": (flight(), {"chat-b": Verdict("stuck")}, None),
    "a stream silent past the limit": (flight(waited_s=70), {}, "no byte for 70 s (stall limit 63 s)"),
    "a whole answer takes long": (flight(stream=False, waited_s=600), {}, None),
    "sending to the client": (flight(sending=True), {"chat-a": Verdict("stuck")}, None),
    "held (no backend)": (flight(backend=None, waited_s=600), {}, None),
}


@pytest.mark.parametrize("one, unhealthy, reason", ABANDON.values(), ids=ABANDON.keys())
def test_which_flights_the_monitor_gives_up_on(one, unhealthy, reason):
    found = list(to_abandon([one], unhealthy, NOW, limit_s=63.0))
    assert found == ([(one, reason)] if reason else [])


def test_drain_json(tmp_path):
    document = {"updated_s": NOW, "programs": {"chat-a": {"since_s": NOW - 5, "until_s": NOW + 25, "reason": "restart"},
                                               "chat-b": {"until_s": NOW - 61}, "chat-c": {}, "chat-d": "garbage"}}
    assert draining_programs(document, NOW) == {"chat-a", "chat-c"}        # chat-b: a crashed CLI's, long past
    assert draining_programs(None, NOW) == draining_programs({"programs": []}, NOW) == frozenset()
    path = tmp_path / "drain.json"
    clock = [0.0]
    reader = DrainReader(path, clock=lambda: clock[0], wall_clock=lambda: NOW)
    assert reader.draining() == frozenset()
    path.write_text(json.dumps(document))
    assert reader.draining() == frozenset()             # not checked again within 0.25 s
    clock[0] = 1.0
    assert reader.draining() == {"chat-a", "chat-c"}
    path.write_text("{half")
    clock[0] = 2.0
    assert reader.draining() == frozenset()


def test_the_rest_of_a_fastchat_answer():
    params = {"prompt": "<|im_start|>assistant\n", "max_new_tokens": 50, "temperature": 0.0, "echo": False}
    rest = rest_params(params, "Hello! I", tokens=3)
    assert rest == params | {"prompt": "<|im_start|>assistant\nHello! I", "max_new_tokens": 47}
    assert rest_params(params, "x" * 50, tokens=50) is None
    echoed = rest_params(params | {"echo": True}, "<|im_start|>assistant\nHello", tokens=1)
    assert echoed["prompt"] == "<|im_start|>assistant\nHello" and echoed["echo"] is False
    output = {"text": " am", "usage": {"prompt_tokens": 23, "completion_tokens": 1, "total_tokens": 24},
              "finish_reason": None}
    assert joined(output, "Hello! I", 3, prompt_tokens=20) == output | {
        "text": "Hello! I am", "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}}
    assert joined(output, "", 0, None) is output
