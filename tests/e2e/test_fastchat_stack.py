"""The FastChat path for real, brought up with `baremetal up` from one stack file: FastChat's controller, a
model_worker serving tiny-chat on CPU (transformers), FastChat's own OpenAI API server (api.kind =
"fastchat", with a key), and baremetal's gateway in front of the same worker (a [[program]] running
`baremetal gateway`). Clients: the openai SDK and LangChain. Then `baremetal down` leaves no process.

The worker runs with --conv-template qwen-7b-chat: FastChat's API server builds prompts from FastChat's
conversation templates, and that one is the ChatML tiny-chat was trained on, so it answers exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import openai
import psutil
import pytest

from baremetal.config import load_stack
from baremetal.config.model import Stack
from baremetal.demo import fixed_chats as chats
from baremetal.supervisord.client import SupervisorClient
from tests.support.demo_stack import cosine, record, rss_bytes, stack_processes
from tests.support.ports import free_ports
from tests.support.toml_text import toml_document

KEY = "fastchat-e2e-key"
PLAIN = [{"role": "user", "content": chats.PLAIN_QUESTION}]

# Run by FastChat's interpreter: tiny-chat's embedding as FastChat's worker defines it for a causal LM (the
# last hidden state, mean over the tokens, L2-normalised), from transformers alone, one sentence at a time.
REFERENCE = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, sentences = json.loads(sys.stdin.read())
tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
vectors = []
for sentence in sentences:
    with torch.no_grad():
        hidden = model(**tokenizer(sentence, return_tensors="pt"), output_hidden_states=True).hidden_states[-1][0]
    vectors.append(torch.nn.functional.normalize(hidden.mean(0), dim=-1).tolist())
print(json.dumps(vectors))
"""


@dataclass
class FastChatStack:
    folder: Path
    stack_file: Path
    stack: Stack
    gateway_port: int
    up_output: str
    down: bool = False

    @property
    def fastchat_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.api.port}/v1"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/v1"

    def baremetal(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "baremetal", *args, "-c", str(self.stack_file)], cwd=self.folder,
                              capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def stack_document(models_dir: Path, python: str, stack_file: Path, ports: list[int]) -> dict:
    controller, api, worker, gateway = ports
    return {
        "stack": {"name": "fce2e", "root": "state", "models_dir": str(models_dir)},
        "env": {"fastchat": {"kind": "system", "python": python}},
        "controller": {"port": controller},
        "api": {"kind": "fastchat", "port": api, "api_keys": [KEY]},
        "watchdog": {"enabled": False},
        "model": [{"name": "tiny-chat", "path": chats.TINY_CHAT, "engine": "fastchat", "gpus": [], "port": worker,
                   "args": ["--conv-template", "qwen-7b-chat"]}],
        "program": [{"name": "gateway", "health": f"http://127.0.0.1:{gateway}/health",
                     "command": [sys.executable, "-m", "baremetal", "gateway", "-c", str(stack_file),
                                 "--port", str(gateway)]}],
    }


@pytest.fixture(scope="module")
def fastchat_stack(demo_models, fastchat_python):
    folder = Path(tempfile.mkdtemp(prefix="bm-fc-", dir="/tmp"))
    stack_file = folder / "baremetal.toml"
    ports = free_ports(4)
    stack_file.write_text(toml_document(stack_document(demo_models, fastchat_python, stack_file, ports)),
                          encoding="utf-8")
    running = FastChatStack(folder, stack_file, load_stack(stack_file), ports[3], "")
    try:
        result = running.baremetal("up", "--timeout", "10m", timeout_s=700)
        running.up_output = result.stdout
        assert result.returncode == 0, result.stdout + result.stderr
        yield running
    finally:
        if not running.down:
            running.baremetal("down")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(demo_models, fastchat_python) -> list[list[float]]:
    payload = json.dumps([str(demo_models / chats.TINY_CHAT), chats.EMBED_SENTENCES])
    result = subprocess.run([fastchat_python, "-c", REFERENCE], input=payload, capture_output=True, text=True,
                            timeout=300, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(params=["fastchat", "gateway"])
def endpoint(request, fastchat_stack) -> str:
    """FastChat's own API server, and baremetal's gateway in front of the same worker."""
    return fastchat_stack.fastchat_url if request.param == "fastchat" else fastchat_stack.gateway_url


def test_up_brought_every_program_up(fastchat_stack):
    assert "all 4 program(s) running and ready" in fastchat_stack.up_output
    programs = {info.name for info in SupervisorClient(fastchat_stack.stack.socket_path).processes()}
    assert programs == {"controller", "fastchat-tiny-chat", "api", "gateway"}


def test_chat_whole_and_streamed(endpoint):
    client = openai.OpenAI(base_url=endpoint, api_key=KEY, max_retries=0, timeout=120)
    assert [model.id for model in client.models.list()] == ["tiny-chat"]
    whole = client.chat.completions.create(model="tiny-chat", messages=PLAIN, temperature=0, max_tokens=64)
    assert whole.choices[0].message.content == chats.PLAIN_ANSWER and whole.choices[0].finish_reason == "stop"
    pieces = [chunk.choices[0].delta.content or "" for chunk in
              client.chat.completions.create(model="tiny-chat", messages=PLAIN, temperature=0, max_tokens=64,
                                             stream=True) if chunk.choices]
    assert "".join(pieces) == chats.PLAIN_ANSWER and len([piece for piece in pieces if piece]) > 1


def test_embeddings_are_the_models_hidden_states(endpoint, reference):
    client = openai.OpenAI(base_url=endpoint, api_key=KEY, max_retries=0, timeout=120)
    response = client.embeddings.create(model="tiny-chat", input=chats.EMBED_SENTENCES)
    vectors = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
    assert [len(vector) for vector in vectors] == [len(reference[0])] * len(chats.EMBED_SENTENCES)
    for served, expected in zip(vectors, reference):
        assert cosine(served, expected) > 0.999


def test_a_wrong_key_is_refused(endpoint):
    client = openai.OpenAI(base_url=endpoint, api_key="not-the-key", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="tiny-chat", messages=PLAIN, max_tokens=4)


def test_the_literal_key_is_on_no_command_line_and_in_no_readable_file(fastchat_stack):
    """The key answers (above), yet no process's argv and no rendered program file holds it: FastChat's API
    server read it from the 0600 keys file."""
    client = SupervisorClient(fastchat_stack.stack.socket_path)
    argvs = [" ".join(process.cmdline()) for process in stack_processes(client)]
    assert argvs and not [argv for argv in argvs if KEY in argv]
    assert not [path for path in fastchat_stack.stack.supervisor_dir.rglob("*.conf") if KEY in path.read_text()]
    keys_file = fastchat_stack.stack.run_dir / "api-keys.json"
    assert KEY in keys_file.read_text() and oct(keys_file.stat().st_mode & 0o777) == "0o600"


def test_langchain(endpoint, reference):
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    llm = ChatOpenAI(base_url=endpoint, api_key=KEY, model="tiny-chat", temperature=0, max_tokens=64, max_retries=0)
    assert llm.invoke(chats.PLAIN_QUESTION).content == chats.PLAIN_ANSWER
    embeddings = OpenAIEmbeddings(base_url=endpoint, api_key=KEY, model="tiny-chat", check_embedding_ctx_length=False,
                                  max_retries=0)
    assert cosine(embeddings.embed_query(chats.EMBED_SENTENCES[0]), reference[0]) > 0.999


def test_down_leaves_no_process(fastchat_stack):
    client = SupervisorClient(fastchat_stack.stack.socket_path)
    processes = stack_processes(client)
    record("fastchat-stack-before-down", {"processes": len(processes), "rss_mib": round(rss_bytes(processes) / 2**20)})
    result = fastchat_stack.baremetal("down")
    fastchat_stack.down = True
    assert result.returncode == 0 and "outlived" not in result.stdout, result.stdout + result.stderr
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {process.cmdline()}")
        except psutil.NoSuchProcess:
            pass
    assert not left
