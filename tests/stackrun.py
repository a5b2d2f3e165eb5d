"""Run a real stack under real supervisord for a test, and clean up whatever happens."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import psutil

from baremetal.config import load_stack
from baremetal.events import events_path, read_events
from baremetal.generate import generate
from baremetal.supervisor import SupervisorClient
from baremetal.watchdog_state import read_state, state_path
from tests.lifecycle_helpers import force_down, wait_for

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "tests" / "servers" / "health_server.py"


class RunningStack:
    """A stack whose supervisord runs; helpers to read what the watchdog wrote."""

    def __init__(self, stack_file: Path):
        self.stack = load_stack(stack_file)
        self.client = SupervisorClient(self.stack.socket_path)

    def conf(self) -> str:
        return str(self.stack.supervisord_conf)

    def state(self) -> dict | None:
        return read_state(state_path(self.stack.root))

    def program(self, name: str) -> dict:
        state = self.state() or {}
        return state.get("programs", {}).get(name, {})

    def events(self, program: str | None = None, kind: str | None = None) -> list[dict]:
        return [e for e in read_events(events_path(self.stack.root))
                if (program is None or e.get("program") == program) and (kind is None or e.get("kind") == kind)]

    def pid(self, name: str) -> int:
        return self.client.process(name).pid

    def supervisorctl(self, *words: str) -> str:
        result = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", self.conf(), *words],
                                capture_output=True, text=True, timeout=60)
        return result.stdout + result.stderr


@contextlib.contextmanager
def running_stack(stack_file: Path) -> Iterator[RunningStack]:
    """Render the stack, start its supervisord, and shut it down (killing leftovers) afterwards."""
    stack = load_stack(stack_file)
    generate(stack)
    subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(stack.supervisord_conf)], check=True,
                   cwd=REPO)
    running = RunningStack(stack_file)
    wait_for(running.client.is_running, 20, what="supervisord answering")
    daemon_pid = running.client.pid()
    try:
        yield running
    finally:
        children = psutil.Process(daemon_pid).children(recursive=True) if psutil.pid_exists(daemon_pid) else []
        for child in children:                     # a stopped process cannot act on the stop signal
            with contextlib.suppress(psutil.Error):
                child.resume()
        with contextlib.suppress(Exception):
            running.client.shutdown()
        psutil.wait_procs([psutil.Process(daemon_pid)] if psutil.pid_exists(daemon_pid) else [], timeout=60)
        force_down(stack.root)
