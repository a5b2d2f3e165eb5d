"""What `top` decides to show, from readings made by hand: program rows (supervisord, the watchdog's
verdict, restarts, draining, GPU memory), models (rates over ten seconds, errors and the median time to
first byte over a minute, held requests), key names, GPUs (cordoned, history) and events."""

from __future__ import annotations

import json

import pytest

from baremetal.cli.top.builder import FrameBuilder
from baremetal.cli.top.frame import Reading
from baremetal.config import load_stack
from baremetal.gateway.metrics import Metrics
from baremetal.plan.pipeline import known_specs
from baremetal.supervisord.client import ProcessInfo
from baremetal.supervisord.states import ProcessState

STACK = """
[stack]
name = "node"
root = "state"
[api]
port = 18000
[watchdog]
interval = "1s"
[[program]]
name = "chat-a"
command = ["sleep", "1"]
gpus = [0]
serves = { model = "chat", task = "chat", url = "http://127.0.0.1:18001" }
[[program]]
name = "chat-b"
command = ["sleep", "1"]
serves = { model = "chat", task = "chat", url = "http://127.0.0.1:18002" }
[[program]]
name = "tei"
command = ["sleep", "1"]
serves = { model = "embed", task = "embed", url = "http://127.0.0.1:18003" }
"""
NOW_S = 1_800_000_000.0


@pytest.fixture
def builder(write_stack):
    stack = load_stack(write_stack(STACK))
    return FrameBuilder(stack.stack.name, known_specs(stack), stack.watchdog.interval_s, gateway=True)


def info(name: str, state: ProcessState = ProcessState.RUNNING, pid: int = 100, uptime_s: float = 30) -> ProcessInfo:
    return ProcessInfo(name=name, group=name, state=state, pid=pid if state == ProcessState.RUNNING else 0,
                       start_s=NOW_S - uptime_s, stop_s=0, now_s=NOW_S, exit_status=0, spawn_error="",
                       description="", stdout_logfile="", stderr_logfile="")


def watchdog(age_s: float = 0.5, **programs) -> dict:
    return {"updated_s": NOW_S - age_s, "interval_s": 1.0, "programs": programs}


def test_program_rows(builder):
    reading = Reading(
        time_s=NOW_S,
        processes=(info("chat-a", pid=101), info("chat-b", ProcessState.FATAL), info("api", pid=103),
                   info("watchdog", pid=104), info("extra", pid=105)),
        watchdog=watchdog(**{"chat-a": {"phase": "ready", "healthy": True, "reason": "ready", "restarts": 2},
                             "chat-b": {"phase": "given_up", "healthy": False, "reason": "5 restarts in 1h",
                                        "hang_kind": "collective_spin"}}),
        gateway_state={"updated_s": NOW_S - 1, "backends": {"chat-a": {"in_flight": 3, "draining": True}}},
        spawns={"chat-a": 4, "chat-b": 1, "api": 1},
        gpus=({"index": 0, "processes": [{"pid": 201, "memory_used_bytes": 3 << 30},
                                         {"pid": 202, "memory_used_bytes": 1 << 30}]},),
        gpu_owners={201: "chat-a", 202: "chat-a"})
    rows = {row.name: row for row in builder.build(reading).programs}
    assert list(rows) == ["chat-a", "chat-b", "tei", "api", "watchdog", "extra"]
    chat_a = rows["chat-a"]
    assert (chat_a.state, chat_a.ready, chat_a.verdict, chat_a.restarts, chat_a.watchdog_restarts) == (
        "RUNNING", True, "ready", 3, 2)
    assert chat_a.draining and chat_a.in_flight == 3 and chat_a.gpu_memory_bytes == 4 << 30 and chat_a.gpus == (0,)
    assert (rows["chat-b"].state, rows["chat-b"].ready, rows["chat-b"].verdict) == (
        "FATAL", False, "given_up (collective_spin)")
    assert rows["tei"].state == "NOT LOADED"
    assert rows["watchdog"].ready is True and rows["watchdog"].verdict == "reporting"
    assert rows["api"].ready is None and rows["api"].port == 18000
    assert rows["extra"].model is None


def test_a_stale_watchdog_report_is_not_believed(builder):
    stale = Reading(time_s=NOW_S, processes=(info("chat-a"), info("watchdog")),
                    watchdog=watchdog(age_s=60, **{"chat-a": {"phase": "ready", "healthy": True}}))
    frame = builder.build(stale)
    assert frame.program("chat-a").ready is None and frame.program("chat-a").verdict == "-"
    assert frame.program("watchdog").ready is False and frame.program("watchdog").verdict == "silent"
    assert not frame.watchdog_fresh and frame.watchdog_age_s == pytest.approx(60)


def test_supervisord_down(builder):
    frame = builder.build(Reading(time_s=NOW_S, processes=None, supervisord_error="supervisord is not running"))
    assert {row.state for row in frame.programs} == {"?"} and frame.supervisord_error


def test_draining_from_drain_json_until_its_deadline_passes(builder):
    drain = {"programs": {"chat-a": {"until_s": NOW_S + 5, "reason": "restart"},
                          "chat-b": {"until_s": NOW_S - 61, "reason": "stop"}}}     # a crashed CLI's leftover
    frame = builder.build(Reading(time_s=NOW_S, processes=(info("chat-a"), info("chat-b")), drain=drain))
    assert frame.program("chat-a").draining and not frame.program("chat-b").draining


def page(chat_ok: int, chat_errors: int, first_byte_s: float, extra: str = "") -> str:
    metrics = Metrics()
    for _ in range(chat_ok):
        metrics.answered("chat", "chat-a", "chat", 200, 0.5, first_byte_s)
    for _ in range(chat_errors):
        metrics.answered("chat", "chat-b", "chat", 502, 0.01, None)
    metrics.started("chat", "chat-a")
    return metrics.render() + extra


def test_model_rates_over_the_window(builder):
    builder.build(Reading(time_s=NOW_S - 10, processes=(), metrics_text=page(10, 0, 0.02)))
    reading = Reading(time_s=NOW_S, processes=(info("chat-a"), info("chat-b")),
                      metrics_text=page(30, 2, 0.3, 'baremetal_gateway_tokens_total{key="-",model="chat",'
                                                    'kind="completion"} 500\n'),
                      watchdog=watchdog(**{"chat-a": {"healthy": True}, "chat-b": {"healthy": False}}),
                      gateway_state={"updated_s": NOW_S, "models": {"chat": {"held": 4}}})
    frame = builder.build(reading)
    chat = next(row for row in frame.models if row.name == "chat")
    assert chat.requests_per_s == pytest.approx(22 / 10)           # 20 answered and 2 errors in ten seconds
    assert chat.errors_per_min == pytest.approx(2 * 6)
    assert chat.in_flight == 1 and chat.held == 4
    assert chat.tokens_per_s == pytest.approx(500 / 10)            # none counted in the first reading
    assert 0.25 < chat.ttft_p50_s <= 0.5                            # the 20 new ones, not the first 10 at 20 ms
    assert (chat.backends, chat.ready_backends) == (2, 1)
    assert chat.migrated_per_min is None                           # this gateway does not count migrations
    embed = next(row for row in frame.models if row.name == "embed")
    assert embed.requests_per_s == 0 and embed.ttft_p50_s is None
    assert frame.tokens_history == (pytest.approx(50.0),) and frame.keys == ()


def test_the_first_reading_has_no_rates_and_a_missing_page_says_why(builder):
    first = builder.build(Reading(time_s=NOW_S, processes=(), metrics_text=page(1, 0, 0.1)))
    assert {row.requests_per_s for row in first.models} == {None}
    missing = builder.build(Reading(time_s=NOW_S + 1, processes=(), metrics_error="connection refused"))
    assert missing.gateway_note == "gateway metrics unavailable: connection refused"
    assert {row.in_flight for row in missing.models} == {None}


def test_rows_per_key_name(builder):
    keys = ('baremetal_gateway_key_requests_total{{key="team-a",model="chat",status="200"}} {n}\n'
            'baremetal_gateway_key_requests_total{{key="-",model="chat",status="200"}} {n}\n'
            'baremetal_gateway_rate_limited_total{{key="team-a",limit="tokens_per_minute"}} {m}\n')
    builder.build(Reading(time_s=NOW_S - 10, processes=(), metrics_text=page(0, 0, 0.1, keys.format(n=0, m=0))))
    frame = builder.build(Reading(time_s=NOW_S, processes=(), metrics_text=page(0, 0, 0.1, keys.format(n=50, m=2))))
    team = next(row for row in frame.keys if row.key == "team-a" and row.model == "chat")
    assert team.requests_per_s == pytest.approx(5.0)
    limited = next(row for row in frame.keys if row.key == "team-a" and row.model == "")
    assert limited.rate_limited_per_min == pytest.approx(12.0)


def test_gpus_cordon_history_and_holders(builder):
    cordon = {"updated_s": NOW_S, "gpus": {"1": {"since_s": NOW_S - 9, "reason": "Xid 79 (GPU has fallen off the bus)"}}}
    for utilization, offset in ((10, 2), (30, 1), (50, 0)):
        gpus = ({"index": 0, "name": "NVIDIA H200", "utilization_gpu_percent": utilization,
                 "throttle_reasons": ["gpu_idle", "sw_thermal"], "processes": [{"pid": 7, "memory_used_bytes": 5}]},
                {"index": 1, "utilization_gpu_percent": None})
        frame = builder.build(Reading(time_s=NOW_S - offset, processes=(), gpus=gpus, gpu_owners={7: "chat-a"},
                                      cordon=cordon))
    first, second = frame.gpus
    assert first.utilization_history == (10.0, 30.0, 50.0) and first.throttle == ("sw_thermal",)
    assert first.programs == (("chat-a", 5),) and first.cordoned is None
    assert second.cordoned == "Xid 79 (GPU has fallen off the bus)" and second.utilization_history == ()


def test_events_newest_first(builder):
    events = tuple({"time_s": NOW_S - n, "kind": "ready", "program": f"p{n}", "message": "ready"} for n in (3, 2, 1))
    frame = builder.build(Reading(time_s=NOW_S, processes=(), events=events))
    assert [row.program for row in frame.events] == ["p1", "p2", "p3"]
    assert json.dumps(frame.events[0].event)                     # the whole event, for the evidence view


def test_no_gateway_in_the_stack(write_stack):
    stack = load_stack(write_stack(STACK.replace("port = 18000", 'kind = "none"')))
    builder = FrameBuilder("node", known_specs(stack), 1.0, gateway=False)
    frame = builder.build(Reading(time_s=NOW_S, processes=()))
    assert "no gateway in this stack" in frame.gateway_note
