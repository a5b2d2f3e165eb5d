"""The subprocess seam for install: run an argv list (never a shell), stream its output line by line.

`SubprocessRunner` is the real one. Tests of code that runs commands pass a recording fake with the same
`run` (tests/install/fakes.py), so no test monkeypatches subprocess.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

LineCallback = Callable[[str], None]
TickCallback = Callable[[float], None]


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    lines: tuple[str, ...]           # stdout and stderr together, in order, without line ends
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, count: int = 15) -> list[str]:
        """The last `count` non-blank lines: where pip says what went wrong."""
        return [line for line in self.lines if line.strip()][-count:]


class CommandRunner(Protocol):
    def run(self, argv: Sequence[str], environment: Mapping[str, str] | None = None,
            on_line: LineCallback | None = None, on_tick: TickCallback | None = None,
            timeout_s: float | None = None) -> CommandResult: ...


class SubprocessRunner:
    """Runs commands for real. `on_line` gets each output line as it comes; `on_tick(elapsed_s)` is
    called every `tick_s` while the command runs, so long silent steps (a wheel build) still show life."""

    def __init__(self, tick_s: float = 15.0):
        self.tick_s = tick_s

    def run(self, argv: Sequence[str], environment: Mapping[str, str] | None = None,
            on_line: LineCallback | None = None, on_tick: TickCallback | None = None,
            timeout_s: float | None = None) -> CommandResult:
        """Run `argv` with os.environ plus `environment`; a missing program is returncode 127, not an error."""
        started = time.monotonic()
        env = dict(os.environ) | dict(environment or {})
        try:
            process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, text=True, errors="replace", bufsize=1)
        except (FileNotFoundError, PermissionError, NotADirectoryError) as error:
            return CommandResult(127, (f"cannot run {argv[0]}: {error.strerror or error}",))
        lines: list[str] = []
        pending: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(process.stdout, pending), daemon=True)
        reader.start()
        next_tick = started + self.tick_s
        while True:
            now = time.monotonic()
            if timeout_s is not None and now - started > timeout_s:
                process.kill()
                lines.append(f"killed after {timeout_s:g}s without finishing")
                break
            try:
                line = pending.get(timeout=max(0.05, min(next_tick, started + (timeout_s or 1e9)) - now))
            except queue.Empty:
                if on_tick and time.monotonic() >= next_tick:
                    on_tick(time.monotonic() - started)
                    next_tick += self.tick_s
                continue
            if line is None:
                break
            lines.append(line)
            if on_line:
                on_line(line)
        returncode = process.wait()
        reader.join(timeout=5)
        return CommandResult(returncode, tuple(lines), time.monotonic() - started)


def _pump(stream, pending: queue.Queue) -> None:
    for line in stream:
        pending.put(line.rstrip("\r\n"))
    stream.close()
    pending.put(None)
