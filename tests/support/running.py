"""Run a stack file for real in a test: render it with baremetal, start real supervisord, wait until every
program's own probe (baremetal's deep probe) answers, measure time to healthy and memory, shut it down.

    with running_stack(stack_file) as running:
        running.spec("vllm-tiny-chat").port ...

`start_stack` does the same without waiting and without a `with` block, for module fixtures that stop
the stack themselves (`running.stop()`). Polls with deadlines, never sleeps and hopes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import psutil

from baremetal.config import load_stack
from baremetal.config.model import Stack
from baremetal.plan.pipeline import generate
from baremetal.plan.spec import ProgramSpec
from baremetal.stack.probes import probe
from baremetal.supervisord.client import SupervisorClient
from baremetal.supervisord.states import FAILED_STATES, ProcessState
from tests.support.engine_envs import CACHE
from tests.support.waiting import wait_for

MEASUREMENTS = CACHE / "measurements.jsonl"


@dataclass
class Running:
    """A started stack: its specs, a client for its supervisord, and what was measured at start-up."""

    stack: Stack
    specs: list[ProgramSpec]
    client: SupervisorClient
    healthy_s: dict[str, float] = field(default_factory=dict)   # program -> seconds from spawn to probe OK
    rss_bytes: dict[str, int] = field(default_factory=dict)     # program -> RSS of its process tree

    def spec(self, name: str) -> ProgramSpec:
        return next(spec for spec in self.specs if spec.name == name)

    def url(self, name: str) -> str:
        return self.spec(name).probe.url

    def log_tail(self, name: str, length: int = 3000) -> str:
        return self.client.tail(name, length) + self.client.tail(name, length, stderr=True)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.api.port}"

    def wait_serving(self, urls: list[str], timeout_s: float) -> None:
        """Every URL answers 200; a program that dies meanwhile fails the wait with its log."""
        deadline = time.monotonic() + timeout_s
        pending = list(urls)
        while pending:
            for info in self.client.processes():
                if info.state in (ProcessState.FATAL, ProcessState.EXITED, ProcessState.BACKOFF):
                    raise AssertionError(f"{info.name} is {info.state.name}:\n{self.log_tail(info.name)}")
            try:
                if httpx.get(pending[0], timeout=2).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{pending[0]} not serving within {timeout_s}s")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop supervisord and wait until it and every program it ran are gone."""
        _shutdown(self.client)


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (vLLM's engine core is a child)."""
    try:
        root = psutil.Process(pid)
        processes = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def _wait_healthy(running: Running, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = {spec.name for spec in running.specs if spec.probe is not None}
    with httpx.Client() as http:
        while pending:
            for info in running.client.processes():
                if info.name in pending and info.state in FAILED_STATES:
                    raise AssertionError(f"{info.name} is {info.state.name}:\n{running.log_tail(info.name)}")
            for name in sorted(pending):
                if probe(running.spec(name).probe, http, timeout_s=10, deep=True).ok:
                    info = running.client.process(name)
                    running.healthy_s[name] = round(time.time() - info.start_s, 1)
                    running.rss_bytes[name] = tree_rss_bytes(info.pid)
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                tails = "\n".join(f"--- {name}\n{running.log_tail(name)}" for name in sorted(pending))
                raise AssertionError(f"not healthy within {timeout_s:.0f} s: {sorted(pending)}\n{tails}")
            if pending:
                time.sleep(0.5)


def _record(running: Running, label: str) -> None:
    lines = [{"label": label, "program": name, "healthy_s": running.healthy_s[name],
              "rss_mib": round(running.rss_bytes[name] / 2**20)} for name in sorted(running.healthy_s)]
    for line in lines:
        print(f"[measured] {line}")
    MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
    with open(MEASUREMENTS, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)


def start_stack(stack_file: Path) -> Running:
    """Render the stack, start its supervisord, and return once supervisord answers (programs may still be
    starting). Whoever calls it stops it: `running.stop()`."""
    stack = load_stack(stack_file)
    generated = generate(stack)
    # Started from the stack's folder, as an operator would: files a program drops in its working
    # directory land there (and tests can look), never in the repository.
    subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(stack.supervisord_conf)], check=True,
                   cwd=stack_file.parent)
    client = SupervisorClient(stack.socket_path)
    running = Running(stack, generated.specs, client)
    try:
        wait_for(client.is_running, 30, what="supervisord running")
    except AssertionError:
        _shutdown(client)
        raise
    return running


@contextlib.contextmanager
def running_stack(stack_file: Path, timeout_s: float = 600, label: str = "", wait: bool = True) -> Iterator[Running]:
    """The stack's programs running under real supervisord and answering their probes; stopped after.
    `wait=False` yields as soon as supervisord answers (for tests of programs that fail or load slowly)."""
    running = start_stack(stack_file)
    client = running.client
    try:
        if wait:
            _wait_healthy(running, timeout_s)
            _record(running, label or running.stack.stack.name)
        yield running
    finally:
        _shutdown(client)


def _shutdown(client: SupervisorClient, timeout_s: float = 60) -> None:
    """Stop supervisord and wait until it and every program it ran are gone."""
    try:
        daemon = psutil.Process(client.pid())
        children = daemon.children(recursive=True)
        for child in children:          # a stopped (SIGSTOP) process cannot act on the stop signal
            with contextlib.suppress(psutil.NoSuchProcess):
                child.resume()
        client.shutdown()
    except Exception:  # noqa: BLE001 - nothing to stop if it never came up
        return
    _gone, alive = psutil.wait_procs([daemon] + children, timeout=timeout_s)
    for process in alive:       # only processes this test started, by pid
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    assert not alive, f"still running {timeout_s:.0f} s after shutdown: {[p.pid for p in alive]}"
