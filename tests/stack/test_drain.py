"""drain.json (what the CLI writes for a planned change), gateway.json as the CLI reads it, the rolling
order of replicas, and the drain wait: pure parts with tables, the file parts on real files."""

from __future__ import annotations

import json

import pytest

from baremetal.config.load import parse_stack
from baremetal.stack.changes import Changer, DrainOutcome, drain_state, rolling_batches
from baremetal.stack.drain import Change, DrainEntry, DrainFile, active_drains, changes
from baremetal.stack.gateway_view import BackendView, GatewayView, gateway_view

NOW = 1_800_000_000.0


@pytest.mark.parametrize("document, expected", [
    (None, {}),
    ("nonsense", {}),
    ({"programs": []}, {}),
    ({"programs": {"a": {"since_s": NOW - 5, "until_s": NOW + 25, "reason": "restart"}}},
     {"a": DrainEntry(NOW - 5, NOW + 25, "restart")}),
    # past its deadline the CLI is stopping it: still draining, for at most 60 s more
    ({"programs": {"a": {"since_s": NOW - 80, "until_s": NOW - 50, "reason": "stop"}}},
     {"a": DrainEntry(NOW - 80, NOW - 50, "stop")}),
    ({"programs": {"a": {"since_s": NOW - 100, "until_s": NOW - 61}}}, {}),      # a crashed CLI's leftover
    ({"programs": {"a": {"since_s": "soon", "until_s": NOW}, "b": 3, "c": {"until_s": NOW}}}, {}),
    ({"programs": {"a": {"since_s": NOW, "until_s": NOW + 1, "extra": [1]}}}, {"a": DrainEntry(NOW, NOW + 1, "restart")}),
])
def test_active_drains(document, expected):
    assert active_drains(document, NOW) == expected


def test_changes_and_which_process_an_operator_started():
    document = {"changes": {"a": {"since_s": NOW, "reason": "update", "started_s": NOW + 10, "done_s": None},
                            "b": {"since_s": NOW, "done_s": NOW + 5}, "c": {"reason": "stop"}, "d": "x"}}
    found = changes(document)
    assert found == {"a": Change(NOW, "update", NOW + 10, None), "b": Change(NOW, "restart", None, NOW + 5)}
    a = found["a"]
    assert a.active(NOW + 100, max_s=1000) and not a.active(NOW + 2000, max_s=1000)   # a crashed CLI lets go
    assert not found["b"].active(NOW + 6, max_s=1000)
    assert a.started_process(NOW + 10.5) and a.started_process(NOW + 9.5)
    assert not a.started_process(NOW + 75) and not a.started_process(NOW + 8)      # a later crash, an earlier one
    assert not found["b"].started_process(NOW)


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_drain_file_records_a_change_from_begin_to_finish(short_tmp):
    path = short_tmp / "run" / "drain.json"
    clock = Clock()
    drains = DrainFile(path, clock)
    since = drains.begin(["vllm-a", "api"], "restart", ["vllm-a"], 30.0)
    document = json.loads(path.read_text())
    assert since == NOW and document["programs"] == {"vllm-a": {"since_s": NOW, "until_s": NOW + 30, "reason": "restart"}}
    assert set(document["changes"]) == {"vllm-a", "api"} and document["changes"]["api"]["started_s"] is None
    assert (path.stat().st_mode & 0o777) == 0o600 and (short_tmp / "run" / "drain.lock").exists()
    clock.now += 3
    drains.starting(["vllm-a", "api"])
    clock.now += 40
    drains.finish(["vllm-a", "api"])
    document = json.loads(path.read_text())
    assert document["programs"] == {} and document["updated_s"] == NOW + 43
    assert changes(document)["vllm-a"] == Change(NOW, "restart", NOW + 3, NOW + 43)
    clock.now += 601                                       # done long ago: pruned at the next write
    drains.begin(["other"], "stop", [], 30.0)
    assert set(changes(json.loads(path.read_text()))) == {"other"}


def test_drain_file_writes_nothing_for_no_program(short_tmp):
    drains = DrainFile(short_tmp / "drain.json", Clock())
    drains.begin([], "restart", [], 30.0)
    drains.starting([])
    drains.finish([])
    assert not (short_tmp / "drain.json").exists()


def test_drain_file_survives_a_corrupt_file(short_tmp):
    path = short_tmp / "drain.json"
    path.write_text("{ half")
    DrainFile(path, Clock()).begin(["a"], "stop", ["a"], 5.0)
    assert set(active_drains(json.loads(path.read_text()), NOW)) == {"a"}


@pytest.mark.parametrize("names, models, expected", [
    ([], {}, []),
    (["a", "b"], {"a": "chat", "b": "chat"}, [["a"], ["b"]]),
    (["api", "a", "b", "e"], {"a": "chat", "b": "chat", "e": "embed"}, [["api", "a", "e"], ["b"]]),
    (["a", "b", "c", "x", "y"], {"a": "m", "b": "m", "c": "m", "x": "n", "y": "n"}, [["a", "x"], ["b", "y"], ["c"]]),
    (["w1", "w2"], {}, [["w1", "w2"]]),
])
def test_rolling_batches_never_take_two_replicas_of_a_model_down_together(names, models, expected):
    assert rolling_batches(names, models) == expected


def view(updated: float = NOW, **backends: BackendView) -> GatewayView:
    return GatewayView(updated, 1, backends)


@pytest.mark.parametrize("gateway, expected", [
    (None, ("no_gateway", 0)),
    (view(b=BackendView(in_flight=3)), ("not_routed", 0)),
    (view(NOW - 1, a=BackendView(in_flight=2, draining=True)), ("unseen", 2)),    # written before the drain
    (view(a=BackendView(in_flight=2, draining=False)), ("unseen", 2)),            # not seen by the gateway yet
    (view(a=BackendView(in_flight=2, draining=True)), ("draining", 2)),
    (view(a=BackendView(in_flight=0, draining=True)), ("drained", 0)),
])
def test_drain_state(gateway, expected):
    assert drain_state(gateway, "a", NOW) == expected


@pytest.mark.parametrize("document, expected", [
    (None, None),
    ({"updated_s": NOW - 11}, None),                       # no gateway has written it for 10 s: none runs
    ({"updated_s": NOW, "pid": 7}, GatewayView(NOW, 7, {}, {})),
    ({"updated_s": NOW, "backends": {"a": {"in_flight": 2, "oldest_wait_s": 1.5, "draining": True, "x": 1},
                                     "b": "junk", "c": {"in_flight": -1, "last_byte_s": "x"}},
      "models": {"m": {"held": 2}, "n": 3}},
     GatewayView(NOW, None, {"a": BackendView(in_flight=2, oldest_wait_s=1.5, draining=True), "b": BackendView(),
                             "c": BackendView()}, {"m": 2})),
])
def test_gateway_view(document, expected):
    assert gateway_view(document, NOW) == expected


def changer(short_tmp, clock: Clock, written: list, drain_timeout_s: float = 10.0) -> Changer:
    stack = parse_stack(f'[stack]\nname = "d"\nroot = "{short_tmp}"\n'
                        '[[program]]\nname = "a"\ncommand = ["x"]\nserves = { model = "m", url = "http://127.0.0.1:1" }\n',
                        short_tmp / "baremetal.toml")

    stack.run_dir.mkdir()

    def sleep(seconds: float = 0.0) -> None:     # the gateway answers as the clock moves
        clock.sleep(seconds)
        if written:
            document = written.pop(0)
            if document is None:
                stack.gateway_state_path.unlink(missing_ok=True)
            else:
                stack.gateway_state_path.write_text(json.dumps(document | {"updated_s": clock.now}))

    sleep()                                      # what the gateway wrote before the drain began
    return Changer(stack, client=None, specs={}, say=lambda text: None, drain_timeout_s=drain_timeout_s,
                   clock=clock, sleep=sleep)


def test_the_drain_waits_until_the_gateway_has_seen_it_and_nothing_is_in_flight(short_tmp):
    clock = Clock()
    entry = {"in_flight": 3, "draining": False}
    written = [{"backends": {"a": entry}}, {"backends": {"a": entry | {"draining": True}}},
               {"backends": {"a": {"in_flight": 1, "draining": True}}}, {"backends": {"a": {"in_flight": 0, "draining": True}}}]
    outcome = changer(short_tmp, clock, written).wait_drained(["a"], NOW, NOW + 10)
    assert outcome == [DrainOutcome("a", pytest.approx(0.3), in_flight=3, left=0, state="drained")]
    assert outcome[0].summary() == "drained a in 0.3s: 3 request(s) in flight finished"
    assert written == []


def test_the_drain_ends_at_its_timeout_and_says_what_is_cut(short_tmp):
    clock = Clock()
    written = [{"backends": {"a": {"in_flight": 2, "draining": True}}}] * 100
    outcome = changer(short_tmp, clock, written).wait_drained(["a"], NOW, NOW + 1.95)[0]
    assert (outcome.state, outcome.left, outcome.in_flight) == ("draining", 2, 2)
    assert outcome.summary() == "drain of a timed out after 2.0s: 2 of 2 request(s) still in flight are cut"


def test_no_gateway_means_nothing_to_wait_for(short_tmp):
    outcome = changer(short_tmp, Clock(), []).wait_drained(["a"], NOW, NOW + 30)[0]
    assert outcome.state == "no_gateway" and outcome.waited_s == 0
    assert "no gateway is running" in outcome.summary()
