"""When the watchdog sends its canary, and what the gateway's witness adds: the observer of a vLLM server
with the HTTP client as a recording fake (the probes' seam) and a fake clock; one look per second."""

from __future__ import annotations

import os
from concurrent.futures import Executor, Future

from baremetal.plan.spec import Probe, ProgramSpec
from baremetal.stack.gateway_view import BackendView
from baremetal.supervisord.client import ProcessInfo
from baremetal.supervisord.states import ProcessState
from baremetal.watchdog.observe import ProgramObserver

NOW = 1_800_000_000.0


class Answer:
    def __init__(self, status_code: int, text: str):
        self.status_code, self.text = status_code, text

    def json(self):
        import json

        return json.loads(self.text)


class FakeVllm:
    """/health, /metrics with counters, and completions that move them (as a real engine's do)."""

    def __init__(self):
        self.steps = 0
        self.canaries: list[dict] = []
        self.asked: list[str] = []          # the paths of its GETs

    def get(self, url: str, timeout: float, headers: dict | None = None) -> Answer:
        self.asked.append(url.rsplit("/", 1)[-1])
        if url.endswith("/metrics"):
            return Answer(200, f"vllm:iteration_tokens_total_count {self.steps}\nvllm:num_requests_running 0\n"
                               "vllm:num_requests_waiting 0\n")
        return Answer(200, "")

    def post(self, url: str, timeout: float, json=None, headers: dict | None = None) -> Answer:
        self.canaries.append(dict(headers or {}))
        self.steps += 1
        return Answer(200, '{"choices": [{"text": "x"}]}')


class AtOnce(Executor):
    def submit(self, fn, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def observer(server: FakeVllm, idle_probe_interval_s: float = 30.0) -> ProgramObserver:
    spec = ProgramSpec(name="vllm-a", role="worker", argv=(), environment={}, priority=1,
                       probe=Probe("vllm", "http://127.0.0.1:1", model="chat", task="chat"))
    return ProgramObserver(spec, server, probe_timeout_s=1.0, canary_timeout_s=60.0, canary_pool=AtOnce(),
                           idle_probe_interval_s=idle_probe_interval_s)


INFO = ProcessInfo(name="vllm-a", group="vllm-a", state=ProcessState.RUNNING, pid=os.getpid(), start_s=NOW - 100,
                   stop_s=0, now_s=NOW, exit_status=0, spawn_error="", description="", stdout_logfile="",
                   stderr_logfile="")


def test_an_idle_engine_behind_the_gateway_gets_a_canary_only_every_idle_probe_interval():
    server = FakeVllm()
    watch = observer(server)
    idle = BackendView("chat")
    sent_at = []
    for second in range(120):
        before = len(server.canaries)
        watch.observe(INFO, NOW + second, idle, gateway_up=True)
        if len(server.canaries) > before:
            sent_at.append(second)
    assert sent_at == [30, 60, 90]                              # 2 a minute
    assert [c["X-Request-Id"] for c in server.canaries] == [f"baremetal-canary-vllm-a-{n}" for n in (1, 2, 3)]


def test_requests_through_the_gateway_are_use_and_need_no_canary():
    server = FakeVllm()
    watch = observer(server)
    for second in range(100):
        recent = BackendView("chat", last_request_s=NOW + second - 5)     # a request every few seconds
        watch.observe(INFO, NOW + second, recent, gateway_up=True)
    assert server.canaries == []


def test_requests_in_flight_through_the_gateway_are_work_pending_and_their_bytes_progress():
    server = FakeVllm()
    watch = observer(server)
    watch.observe(INFO, NOW, BackendView("chat"), gateway_up=True)
    streaming = BackendView("chat", in_flight=2, last_byte_s=NOW + 0.9, last_request_s=NOW, oldest_wait_s=0.1)
    seen = watch.observe(INFO, NOW + 1, streaming, gateway_up=True)
    assert seen.pending and seen.pending_detail.endswith(
        "2 request(s) in flight through the gateway, the oldest without a byte for 0.1s")
    flowing = watch.observe(INFO, NOW + 2, BackendView("chat", in_flight=2, last_byte_s=NOW + 1.9,
                                                       oldest_wait_s=0.1), gateway_up=True)
    assert flowing.pending and flowing.progressed                     # bytes arrived since the last look
    stuck = watch.observe(INFO, NOW + 3, BackendView("chat", in_flight=2, last_byte_s=NOW + 1.9,
                                                     oldest_wait_s=1.1), gateway_up=True)
    assert stuck.pending and not stuck.progressed and server.canaries == []


def test_without_a_gateway_an_engine_that_goes_quiet_gets_one_canary():
    server = FakeVllm()
    watch = observer(server)
    watch.observe(INFO, NOW, None)
    watch.observe(INFO, NOW + 1, None)            # the first look after start: one canary (no gateway)
    assert len(server.canaries) == 1
    for second in range(2, 10):
        watch.observe(INFO, NOW + second, None)
    assert len(server.canaries) == 1              # its own answer is not use
    server.steps += 5                             # a client that bypasses any gateway
    watch.observe(INFO, NOW + 10, None)
    watch.observe(INFO, NOW + 11, None)           # quiet again: gauges may have frozen with requests inside
    watch.observe(INFO, NOW + 12, None)
    assert len(server.canaries) == 2


def test_clients_that_bypass_the_gateway_get_the_quiet_canary_too():
    server = FakeVllm()
    watch = observer(server)
    idle = BackendView("chat")
    for second in range(5):
        watch.observe(INFO, NOW + second, idle, gateway_up=True)
    assert server.canaries == []                 # behind a gateway, a fresh start is not asked
    server.steps += 5                             # requests the gateway never saw
    watch.observe(INFO, NOW + 5, idle, gateway_up=True)
    watch.observe(INFO, NOW + 6, idle, gateway_up=True)
    assert len(server.canaries) == 1
    through = BackendView("chat", last_request_s=NOW + 6.5)
    server.steps += 5                             # requests through the gateway: it watches those itself
    watch.observe(INFO, NOW + 7, through, gateway_up=True)
    watch.observe(INFO, NOW + 8, through, gateway_up=True)
    assert len(server.canaries) == 1


def test_an_idle_engine_behind_the_gateway_is_asked_every_few_seconds_and_a_request_at_once():
    server = FakeVllm()
    watch = observer(server)
    idle = BackendView("chat")
    asked = []
    for second in range(60):
        before = len(server.asked)
        watch.observe(INFO, NOW + second, idle, gateway_up=True)
        if len(server.asked) > before:
            asked.append(second)
    # /health and /metrics every IDLE_LOOK_S (5 s) rather than every second; the canary at 30 s and the
    # look after its answer come on top
    assert asked[:7] == [0, 5, 10, 15, 20, 25, 30] and len(asked) <= 14, asked
    assert set(server.asked) == {"health", "metrics"} and len(server.canaries) == 1
    server.asked.clear()
    waiting = BackendView("chat", in_flight=1, last_request_s=NOW + 60, oldest_wait_s=0.5)
    seen = watch.observe(INFO, NOW + 60.5, waiting, gateway_up=True)          # a request arrived: looked at now
    assert server.asked == ["health", "metrics"] and seen.pending
    for second in range(61, 64):
        watch.observe(INFO, NOW + second, waiting, gateway_up=True)
    assert len(server.asked) == 8                                            # every tick while it waits
    alone = observer(FakeVllm())
    for second in range(10):
        alone.observe(INFO, NOW + second, None)                              # no gateway: every tick
    assert alone.http.asked.count("metrics") == 10
