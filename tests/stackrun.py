"""A stack under real supervisord (tests/running_stack.py), with what its watchdog wrote: the state file,
the events, each program's entry."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from baremetal.events import events_path, read_events
from baremetal.watchdog_state import read_state, state_path
from tests.lifecycle_helpers import wait_for  # noqa: F401 - the tests' one polling helper, re-exported
from tests.running_stack import Running, running_stack as start_stack

SERVER = Path(__file__).resolve().parent / "servers" / "health_server.py"


class WatchedStack:
    """A running stack, read the way an operator reads the watchdog's outputs."""

    def __init__(self, running: Running):
        self.running = running
        self.stack = running.stack
        self.client = running.client

    def state(self) -> dict | None:
        return read_state(state_path(self.stack.root))

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
def running_stack(stack_file: Path) -> Iterator[WatchedStack]:
    """Start the stack without waiting for its programs (the tests make them fail), stop it after."""
    with start_stack(stack_file, wait=False) as running:
        yield WatchedStack(running)
