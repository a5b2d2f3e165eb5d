"""tiny-chat on FastChat 0.2.36's model_worker (transformers 4.x), registered with its controller, both
started from a rendered stack under real supervisord: the path baremetal's gateway uses for FastChat
workers (it renders the prompt with the model's chat template and streams /worker_generate_stream)."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from baremetal.demo import fixed_chats as chats
from tests.demo.conftest import stack_text
from tests.support.ports import free_port
from tests.support.running import running_stack

# Run by FastChat's interpreter: the chat template as transformers 4.x renders it.
RENDER = r"""
import json, sys
from transformers import AutoTokenizer
folder, conversations = json.loads(sys.stdin.read())
tokenizer = AutoTokenizer.from_pretrained(folder)
print(json.dumps({name: tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                       add_generation_prompt=True)
                  for name, (messages, tools, _reply) in conversations.items()}))
"""


@pytest.fixture(scope="module")
def prompts(demo_models, fastchat_python) -> dict[str, str]:
    payload = json.dumps([str(demo_models / chats.TINY_CHAT), chats.CONVERSATIONS])
    result = subprocess.run([fastchat_python, "-c", RENDER], input=payload, capture_output=True, text=True,
                            timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def worker(demo_models, fastchat_python, module_tmp):
    stack_file = module_tmp / "baremetal.toml"
    model = {"name": "tiny-chat", "path": "tiny-chat", "engine": "fastchat", "env": "fastchat", "task": "chat",
             "gpus": [], "port": free_port()}
    stack_file.write_text(stack_text("fastchat", demo_models, {"fastchat": fastchat_python}, [model],
                                     controller_port=free_port()), encoding="utf-8")
    with running_stack(stack_file, label="fastchat") as running:
        yield running


def generate(worker_url: str, prompt: str) -> dict:
    """The last message of /worker_generate_stream (NUL-separated JSON objects)."""
    payload = {"model": "tiny-chat", "prompt": prompt, "temperature": 0, "max_new_tokens": 64, "echo": False}
    with httpx.stream("POST", worker_url + "/worker_generate_stream", json=payload, timeout=120) as response:
        assert response.status_code == 200
        body = response.read()
    messages = [json.loads(part) for part in body.split(b"\0") if part.strip()]
    assert len(messages) >= 1
    return messages[-1]


def test_prompts_render_the_same_in_transformers_4_and_5(demo_models, prompts):
    """fixed_prompts.json was rendered by the maker with transformers 5 (the vLLM env)."""
    saved = json.loads((demo_models / chats.TINY_CHAT / "fixed_prompts.json").read_text(encoding="utf-8"))
    assert prompts == {name: saved["conversations"][name]["prompt"] for name in chats.CONVERSATIONS}


def test_controller_routes_to_the_worker(worker):
    controller = worker.url("controller")
    assert "tiny-chat" in httpx.post(controller + "/list_models", timeout=10).json()["models"]
    address = httpx.post(controller + "/get_worker_address", json={"model": "tiny-chat"}, timeout=10).json()
    assert address["address"] == worker.url("fastchat-tiny-chat")


@pytest.mark.parametrize("name", list(chats.CONVERSATIONS))
def test_worker_streams_the_trained_reply(worker, prompts, name):
    result = generate(worker.url("fastchat-tiny-chat"), prompts[name])
    assert result["error_code"] == 0
    assert result["text"] == chats.CONVERSATIONS[name][2]
    assert result["finish_reason"] == "stop"


def test_fastchat_writes_no_log_files_into_the_working_directory(worker, module_tmp):
    """FastChat's own log files default to the current directory; baremetal turns them off (LOGDIR="")
    because supervisord already keeps the same output, rotated, under <root>/logs/."""
    assert sorted(path.name for path in module_tmp.iterdir()) == ["baremetal.toml", "state"]
    assert (worker.stack.logs_dir / "fastchat-tiny-chat.log").exists()
