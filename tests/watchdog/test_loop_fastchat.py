"""The watchdog against a REAL FastChat controller and model_worker (transformers on CPU) under real
supervisord: a worker under load is busy, not stuck; a frozen worker is restarted and registers again."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from baremetal.demo import fixed_chats
from tests.support.demo_stack import DEMO_MODELS, demo_models_made
from tests.support.engine_envs import ensure_env
from tests.support.ports import free_port
from tests.support.waiting import wait_for
from tests.support.watched import watched_stack

pytestmark = pytest.mark.e2e   # real supervisord and real servers

WORKER = "fastchat-tiny"


@pytest.fixture(scope="module")
def fastchat_stack(tmp_path_factory):
    python = ensure_env("fastchat") / "bin" / "python"
    demo_models_made()                   # tiny-chat, made in the vLLM env, loads in FastChat
    model = DEMO_MODELS / fixed_chats.TINY_CHAT
    root = tmp_path_factory.mktemp("f", numbered=True)
    stack_file = root / "baremetal.toml"
    stack_file.write_text(f'''
[stack]
name = "wdfastchat"
root = "s"
[env.fastchat]
kind = "system"
python = "{python}"
[api]
kind = "none"
[controller]
port = {free_port()}
[watchdog]
metrics_port = {free_port()}
[[model]]
name = "tiny-chat"
program = "{WORKER}"
path = "{model}"
engine = "fastchat"
env = "fastchat"
gpus = []
port = {free_port()}
''')
    with watched_stack(stack_file) as run:
        wait_for(lambda: run.program(WORKER).get("phase") == "ready", 240, interval_s=1, what="worker ready")
        yield run


def generate(url: str, max_new_tokens: int = 64) -> dict:
    payload = {"model": "tiny-chat", "prompt": "hello", "temperature": 0.7, "max_new_tokens": max_new_tokens}
    with httpx.stream("POST", f"{url}/worker_generate_stream", json=payload, timeout=120, trust_env=False) as reply:
        body = reply.read()
    return [json.loads(part) for part in body.split(b"\0") if part.strip()][-1]


def test_busy_worker_is_not_restarted(fastchat_stack):
    run = fastchat_stack
    url = run.running.url(WORKER)
    done, errors, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                done.append(generate(url, 200)["error_code"])
            except httpx.HTTPError as error:
                errors.append(repr(error))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(40)
    stop.set()
    for thread in threads:
        thread.join(120)
    assert len(done) >= 4 and set(done) == {0} and errors == []
    assert not run.events(WORKER, "restart") and run.program(WORKER)["restarts"] == 0


def test_frozen_worker_is_restarted_and_registers_again(fastchat_stack):
    run = fastchat_stack
    url = run.running.url(WORKER)
    old = run.pid(WORKER)
    frozen_at = time.time()
    os.kill(old, signal.SIGSTOP)
    restart = wait_for(lambda: run.events(WORKER, "restart"), 20, what="restart event")[0]
    assert restart["time_s"] - frozen_at < 5.0
    assert f"processes stopped (SIGSTOP): {old}" in restart["message"]
    wait_for(lambda: run.program(WORKER).get("phase") == "ready" and run.program(WORKER)["restarts"] == 1, 240,
             interval_s=1, what="worker ready again")
    controller = run.running.url("controller")
    wait_for(lambda: "tiny-chat" in httpx.post(f"{controller}/list_models", timeout=10, trust_env=False).json()["models"],
             60, what="registered with the controller again")
    assert generate(url)["error_code"] == 0
