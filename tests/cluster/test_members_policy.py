"""Membership as the head reads it, and what changes in it make the head do. Pure functions, tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from baremetal.cluster.members import Membership, NodeState, RayNode, node_states, parse_membership
from baremetal.cluster.policy import known, lost_nodes, ray_programs, restarts
from baremetal.config import parse_stack
from baremetal.stack.probes import ProbeResult

STACK = '''
[stack]
name = "t"
root = "/r"
[cluster]
[[cluster.node]]
name = "a"
address = "10.0.0.1"
role = "head"
[[cluster.node]]
name = "b"
address = "10.0.0.2"
[[cluster.node]]
name = "c"
address = "10.0.0.3"
[[model]]
name = "big"
path = "/m"
tensor_parallel = 2
distributed_backend = "ray"
[[program]]
name = "driver"
command = ["x"]
ray_gpus = 2
[[program]]
name = "plain"
command = ["y"]
'''
CLUSTER_STACK = parse_stack(STACK, Path("/r/s.toml"), "a")
NOW = 1000.0


def ray(address, node_id, alive=True, start=1.0, end=None, gpus=1.0, reason=""):
    return RayNode(node_id, address, alive, address == "10.0.0.1", start, end, reason, gpus, gpus if alive else None)


def membership(*nodes, written=NOW - 1, ok=True, error=""):
    return Membership(written, ok, error, tuple(nodes))


def states(m):
    return {s.name: (s.state, s.node_id) for s in node_states(CLUSTER_STACK.cluster, m, NOW)}


@pytest.mark.parametrize("m,expected", [
    (membership(ray("10.0.0.1", "h"), ray("10.0.0.2", "b1"), ray("10.0.0.3", "c1")),
     {"a": ("alive", "h"), "b": ("alive", "b1"), "c": ("alive", "c1")}),
    # b died and came back: the newest alive incarnation counts.
    (membership(ray("10.0.0.1", "h"), ray("10.0.0.2", "b1", alive=False, end=50), ray("10.0.0.2", "b2", start=60)),
     {"a": ("alive", "h"), "b": ("alive", "b2"), "c": ("missing", None)}),
    # b died twice: its last death is reported.
    (membership(ray("10.0.0.1", "h"), ray("10.0.0.2", "b1", alive=False, end=50),
                ray("10.0.0.2", "b2", alive=False, start=60, end=70)),
     {"a": ("alive", "h"), "b": ("lost", "b2"), "c": ("missing", None)}),
    (membership(ray("10.0.0.1", "h"), written=NOW - 60), {"a": ("unknown", None), "b": ("unknown", None),
                                                          "c": ("unknown", None)}),
    (membership(ok=False, error="RpcError: timed out"), {"a": ("unknown", None), "b": ("unknown", None),
                                                         "c": ("unknown", None)}),
    (None, {"a": ("unknown", None), "b": ("unknown", None), "c": ("unknown", None)}),
])
def test_node_states(m, expected):
    assert states(m) == expected


def test_reasons_are_kept():
    m = membership(ray("10.0.0.1", "h"), ray("10.0.0.2", "b1", alive=False, end=50,
                                             reason="health check failed due to missing too many heartbeats"))
    lost = {s.name: s for s in node_states(CLUSTER_STACK.cluster, m, NOW)}["b"]
    assert lost.since_s == 50 and "missing too many heartbeats" in lost.detail
    unknown = node_states(CLUSTER_STACK.cluster, membership(written=NOW - 60), NOW)[0]
    assert unknown.detail == "the ray-monitor program last wrote 60s ago"


def test_parse_membership_skips_bad_entries():
    document = {"written_s": 5, "gcs_ok": True, "nodes": [
        {"node_id": "x", "address": "10.0.0.1", "alive": True, "gpus_total": 2, "gpus_free": 1},
        {"address": "no id"}, "junk"]}
    parsed = parse_membership(document)
    assert parsed.written_s == 5 and [n.node_id for n in parsed.nodes] == ["x"] and parsed.nodes[0].gpus_free == 1
    assert parse_membership({"nodes": []}) is None and parse_membership([]) is None


def st(name, state, node_id=None, gpus=1.0):
    return NodeState(name, "", "worker", state, None, node_id, gpus, None)


ALL_UP = [st("a", "alive", "h"), st("b", "alive", "b1"), st("c", "alive", "c1", gpus=0.0)]


@pytest.mark.parametrize("previous,current,lost", [
    (None, ALL_UP, []),                                                     # first look: nothing to compare
    (ALL_UP, ALL_UP, []),
    (ALL_UP, [ALL_UP[0], st("b", "lost", "b1"), ALL_UP[2]], ["b"]),
    (ALL_UP, [ALL_UP[0], st("b", "alive", "b2"), ALL_UP[2]], ["b"]),         # back before anyone looked
    (ALL_UP, [ALL_UP[0], st("b", "missing"), ALL_UP[2]], ["b"]),
    (ALL_UP, [ALL_UP[0], ALL_UP[1], st("c", "lost", "c1", gpus=0.0)], []),   # no GPUs in Ray: no spanning model used it
    (ALL_UP, [st("a", "unknown"), st("b", "unknown"), st("c", "unknown")], []),   # cannot tell: do nothing
    ([ALL_UP[0], st("b", "lost", "b1"), ALL_UP[2]], ALL_UP[:1] + [st("b", "alive", "b2"), ALL_UP[2]], []),
    (ALL_UP, [st("a", "alive", "h2"), st("b", "alive", "b2"), ALL_UP[2]], ["a", "b"]),   # the head restarted
])
def test_lost_nodes(previous, current, lost):
    assert [s.name for s in lost_nodes(previous, current)] == lost


def test_restarts_every_ray_program_once_per_loss():
    assert ray_programs(CLUSTER_STACK) == ["vllm-big", "driver"]
    lost = [ALL_UP[0], st("b", "lost", "b1"), ALL_UP[2]]
    actions = restarts(CLUSTER_STACK, ALL_UP, lost)
    assert [a.program for a in actions] == ["vllm-big", "driver"]
    assert actions[0].reason == "Ray lost node b (b: lost)"
    assert restarts(CLUSTER_STACK, lost, lost) == []                       # once, not every tick


def test_unknown_keeps_the_last_known_view():
    unknown = [st("a", "unknown"), st("b", "unknown"), st("c", "unknown")]
    assert known(ALL_UP, unknown) == ALL_UP
    # The head's GCS came back with new ids for everyone: a loss is seen against the last known view.
    back = [st("a", "alive", "h2"), st("b", "alive", "b2"), ALL_UP[2]]
    assert [r.program for r in restarts(CLUSTER_STACK, known(ALL_UP, unknown), back)] == ["vllm-big", "driver"]


def test_single_node_stacks_have_no_ray_programs():
    single = parse_stack('[stack]\nname = "s"\n[[model]]\nname = "m"\npath = "/m"\ngpus = [0, 1]\n'
                         'distributed_backend = "ray"\n', Path("/r/s.toml"))
    assert ray_programs(single) == []


def test_cluster_watch_reports_changes_and_restarts_once():
    from baremetal.cluster.watch import ClusterWatch

    reports = iter([
        membership(ray("10.0.0.1", "h"), ray("10.0.0.2", "b1"), ray("10.0.0.3", "c1")),
        membership(ray("10.0.0.1", "h"), ray("10.0.0.2", "b1"), ray("10.0.0.3", "c1")),
        membership(ray("10.0.0.1", "h"), ray("10.0.0.2", "b1", alive=False, end=NOW, reason="heartbeats missed"),
                   ray("10.0.0.3", "c1")),
        membership(ray("10.0.0.1", "h"), ray("10.0.0.2", "b1", alive=False, end=NOW, reason="heartbeats missed"),
                   ray("10.0.0.3", "c1")),
        None,                                                                 # the monitor went quiet
        membership(ray("10.0.0.1", "h"), ray("10.0.0.2", "b2", start=NOW), ray("10.0.0.3", "c1")),
    ])
    watch = ClusterWatch(CLUSTER_STACK, read=lambda path: next(reports))
    assert watch.path == Path("/r/run/cluster.json")
    ticks = [watch.tick(NOW) for _ in range(6)]
    assert ticks[0].events == ["node a (10.0.0.1) is in the Ray cluster", "node b (10.0.0.2) is in the Ray cluster",
                               "node c (10.0.0.3) is in the Ray cluster"]
    assert ticks[1].events == [] and ticks[1].restarts == []
    assert ticks[2].events == ["node b (10.0.0.2) is lost: heartbeats missed"]
    assert [r.program for r in ticks[2].restarts] == ["vllm-big", "driver"]
    assert ticks[3].restarts == [] and ticks[3].events == []
    assert all(line.endswith("no word from the ray-monitor program") for line in ticks[4].events)
    assert ticks[4].restarts == []
    assert ticks[5].events[1] == "node b (10.0.0.2) is back in the Ray cluster"
    assert ticks[5].restarts == []                  # restarted at the loss; its launcher waited for b's return


OK = ProbeResult(True, 0.01, "/worker_get_status 200", 200)
FAIL = ProbeResult(False, 2.0, "no answer within the probe timeout (ReadTimeout)")


def walk(results, unhealthy_after=3):
    from baremetal.cluster.remote import RemoteState, advance_remote, entry

    state, seen = RemoteState(), []
    for now, result in enumerate(results):
        state = advance_remote(state, result, unhealthy_after, float(now))
        seen.append((entry(state, "w1")["phase"], entry(state, "w1")["healthy"]))
    return seen


@pytest.mark.parametrize("results,expected", [
    ([FAIL, FAIL], [("loading", False), ("loading", False)]),                       # never answered
    ([OK], [("ready", True)]),
    ([OK, FAIL, FAIL, FAIL, FAIL], [("ready", True), ("ready", False), ("ready", False), ("unreachable", False),
                                    ("unreachable", False)]),                       # tried last, then skipped
    ([OK, FAIL, OK], [("ready", True), ("ready", False), ("ready", True)]),          # one slow probe
    ([OK, FAIL, FAIL, FAIL, OK], [("ready", True), ("ready", False), ("ready", False), ("unreachable", False),
                                  ("ready", True)]),                                # back when it answers
])
def test_remote_programs(results, expected):
    assert walk(results) == expected


def test_remote_entry_says_why_and_since_when():
    from baremetal.cluster.remote import RemoteState, advance_remote, entry

    state = RemoteState()
    for now, result in enumerate([OK, FAIL, FAIL, FAIL, FAIL]):
        state = advance_remote(state, result, 3, 100.0 + now)
    document = entry(state, "w1")
    assert document["since_s"] == 103.0 and document["node"] == "w1" and document["remote"]
    assert document["reason"] == "4 probes failed in a row: no answer within the probe timeout (ReadTimeout)"
