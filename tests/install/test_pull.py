"""`baremetal pull` with the real hub clients (huggingface_hub, modelscope) against a local hub that serves
files made here; the endpoints are pointed at it with HF_ENDPOINT and MODELSCOPE_ENDPOINT."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.hub_server import Hub, HubServer

FILES = {"config.json": b'{"model_type": "qwen2"}', "model.safetensors": os.urandom(300_000),
         "tokenizer/tokenizer.json": b'{"version": "1.0"}'}


def pull(stack_file, server: HubServer, *args: str, home) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env |= {"HF_ENDPOINT": server.url, "MODELSCOPE_ENDPOINT": server.url, "HOME": str(home),
            "HF_HOME": str(home / "hf"), "MODELSCOPE_CACHE": str(home / "ms"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-m", "baremetal", "pull", "-c", str(stack_file), *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("source", ["hf", "modelscope"])
def test_pull_into_models_dir_then_nothing_to_fetch(write_stack, short_tmp, source):
    stack_file = write_stack('[stack]\nname = "pull"\nmodels_dir = "models"\n')
    hub = Hub("acme/tiny-chat", FILES)
    with HubServer(hub) as server:
        first = pull(stack_file, server, "acme/tiny-chat", "--source", source, home=short_tmp)
        assert first.returncode == 0, first.stdout + first.stderr
        target = short_tmp / "models" / "acme" / "tiny-chat"
        for name, data in FILES.items():
            assert (target / name).read_bytes() == data
        assert 'path = "acme/tiny-chat"' in first.stdout
        fetched = len(hub.file_gets())
        assert fetched == len(FILES)
        again = pull(stack_file, server, "acme/tiny-chat", "--source", source, home=short_tmp)
        assert again.returncode == 0, again.stderr
        assert len(hub.file_gets()) == fetched          # complete files are not downloaded again


def test_pull_resumes_a_deleted_file_only(write_stack, short_tmp):
    stack_file = write_stack('[stack]\nname = "pull"\nmodels_dir = "models"\n')
    hub = Hub("acme/tiny-chat", FILES)
    with HubServer(hub) as server:
        assert pull(stack_file, server, "acme/tiny-chat", home=short_tmp).returncode == 0
        target = short_tmp / "models" / "acme" / "tiny-chat"
        (target / "model.safetensors").unlink()
        before = len(hub.file_gets())
        result = pull(stack_file, server, "acme/tiny-chat", home=short_tmp)
        assert result.returncode == 0, result.stderr
        assert hub.file_gets()[before:] == [p for p in hub.file_gets()[before:] if p.endswith("model.safetensors")]
        assert (target / "model.safetensors").read_bytes() == FILES["model.safetensors"]


@pytest.mark.parametrize("args, code, message", [
    (["no-such/model"], 1, "no model 'no-such/model'"),
    (["../etc"], 2, "is not a model id"),
])
def test_pull_errors_are_clear(write_stack, short_tmp, args, code, message):
    stack_file = write_stack('[stack]\nname = "pull"\nmodels_dir = "models"\n')
    with HubServer(Hub("acme/tiny-chat", FILES)) as server:
        result = pull(stack_file, server, *args, home=short_tmp)
    assert result.returncode == code and message in result.stderr
    assert "Traceback" not in result.stderr


def test_pull_without_models_dir_asks_for_one(write_stack, short_tmp):
    stack_file = write_stack('[stack]\nname = "pull"\n')
    with HubServer(Hub("acme/tiny-chat", FILES)) as server:
        result = pull(stack_file, server, "acme/tiny-chat", home=short_tmp)
        assert result.returncode == 2 and "models_dir" in result.stderr
        into = pull(stack_file, server, "acme/tiny-chat", "--to", str(short_tmp / "here"), home=short_tmp)
    assert into.returncode == 0 and (short_tmp / "here" / "config.json").exists()
