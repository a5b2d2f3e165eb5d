"""What `top`'s keys do to a program: exactly what `baremetal restart|stop|start PROGRAM` does, by running
that command, so a restart from the view goes through the same path as one typed in a shell (the same
waiting for readiness, the same drain of requests in flight) and says what it did in the same words."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Action = Literal["restart", "stop", "start"]
OUTPUT_LINES = 20

QUESTIONS: dict[str, str] = {
    "restart": "Restart {program}? It is stopped (requests in flight finish first) and started again, "
               "as `baremetal restart {program}` does.",
    "stop": "Stop {program}? It stays stopped until it is started again (u, `baremetal start` or `baremetal up`).",
    "start": "Start {program}, as `baremetal start {program}` does?",
}


@dataclass(frozen=True)
class ActionResult:
    """How one command went: its exit status and the last lines it printed."""

    action: Action
    program: str
    exit_code: int
    output: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """The command exited 0."""
        return self.exit_code == 0

    def summary(self) -> str:
        """One line for the view: what was done, and the command's last words."""
        last = self.output[-1] if self.output else ""
        verdict = "done" if self.ok else f"failed (exit {self.exit_code})"
        return f"{self.action} {self.program}: {verdict}" + (f": {last}" if last else "")


def command(action: Action, program: str, config_path: Path, node: str | None = None) -> list[str]:
    """The argv of the CLI command that does `action` (this interpreter, this stack file)."""
    return [sys.executable, "-m", "baremetal", "-c", str(config_path), *(["--node", node] if node else []),
            action, program]


def run_action(action: Action, program: str, config_path: Path, node: str | None = None,
               timeout_s: float | None = None) -> ActionResult:
    """Run the command to its end (start and restart wait until the program serves) and keep its output.
    It runs in a session of its own: quitting `top` or closing its terminal does not cut a restart in
    half (a program stopped and never started again)."""
    try:
        done = subprocess.run(command(action, program, config_path, node), capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL, start_new_session=True)
    except subprocess.TimeoutExpired as expired:
        text = (expired.stdout or "") if isinstance(expired.stdout, str) else ""
        return ActionResult(action, program, 124, tuple(text.splitlines()[-OUTPUT_LINES:]) + (
            f"still running after {timeout_s:.0f}s; see `baremetal status`",))
    lines = (done.stdout + done.stderr).splitlines()
    return ActionResult(action, program, done.returncode, tuple(line for line in lines if line.strip())[-OUTPUT_LINES:])
