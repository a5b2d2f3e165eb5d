"""Start a stack file's programs under real supervisord without waiting for deep probes (the gateway may
require a key, some programs are meant to be down), distinct free ports, and shutdown that leaves nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from baremetal.config import load_stack
from baremetal.config.model import Stack
from baremetal.generate import generate
from baremetal.states import ProcessState
from baremetal.supervisor import SupervisorClient
from tests.lifecycle_helpers import wait_for

REPO = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that nothing listens on now (held together while chosen, so a stack's
    programs never get the same one twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


@dataclass
class RunningStack:
    stack: Stack
    client: SupervisorClient

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.api.port}"

    def logs(self, program: str) -> str:
        return self.client.tail(program, 4000) + self.client.tail(program, 4000, stderr=True)

    def wait_serving(self, urls: list[str], timeout_s: float) -> None:
        """Every URL answers 200; a program that dies meanwhile fails the wait with its log."""
        deadline = time.monotonic() + timeout_s
        pending = list(urls)
        while pending:
            for info in self.client.processes():
                if info.state in (ProcessState.FATAL, ProcessState.EXITED, ProcessState.BACKOFF):
                    raise AssertionError(f"{info.name} is {info.state.name}:\n{self.logs(info.name)}")
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
        pid = self.client.pid()
        children = psutil.Process(pid).children(recursive=True)
        self.client.shutdown()
        wait_for(lambda: not psutil.pid_exists(pid), 60, what="supervisord exit")
        wait_for(lambda: not any(child.is_running() for child in children), 30, what="programs exit")


def start_stack(stack_file: Path) -> RunningStack:
    """Render the stack, start its supervisord, and return once supervisord answers."""
    stack = load_stack(stack_file)
    generate(stack)
    subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(stack.supervisord_conf)], check=True)
    client = SupervisorClient(stack.socket_path)
    wait_for(client.is_running, 30, what="supervisord running")
    return RunningStack(stack, client)
