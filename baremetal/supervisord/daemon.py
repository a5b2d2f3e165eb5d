"""This stack's supervisord as a process: start it, find what a killed one left behind, stop it, and make
sure no program process outlives it.

Each stack has its own socket and pidfile under <root>/run/, so two stacks on one host never meet.
Programs are recognised by the SUPERVISOR_SERVER_URL variable that supervisord puts in every child's
environment (and that grandchildren such as vLLM's engine core inherit): it names this stack's socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator

import psutil

from baremetal.config.model import Stack
from baremetal.errors import SupervisorError
from baremetal.host import processes
from baremetal.supervisord import leftovers
from baremetal.supervisord.client import SupervisorClient

START_TIMEOUT_S = 20.0


class DaemonState(Enum):
    RUNNING = "running"            # answers on the socket
    NOT_RUNNING = "not running"    # no socket, no pidfile: clean
    STALE = "stale"                # socket or pidfile left by a supervisord that is gone (killed)
    UNRESPONSIVE = "unresponsive"  # its process lives but does not answer (starting, stopping or wedged)


@dataclass(frozen=True)
class DaemonCheck:
    state: DaemonState
    pid: int | None                # from the pidfile, when there is one

    def describe(self, stack: Stack) -> str:
        """One sentence for the operator."""
        if self.state == DaemonState.RUNNING:
            return f"supervisord for stack {stack.stack.name!r} is running (pid {self.pid})"
        if self.state == DaemonState.STALE:
            return (f"supervisord for stack {stack.stack.name!r} is not running: it was stopped abnormally "
                    f"(pidfile names pid {self.pid}, which is gone) and its programs may still run and hold their "
                    "ports; `baremetal up` ends them, cleans up and starts it (`baremetal down` only cleans up)")
        if self.state == DaemonState.UNRESPONSIVE:
            return (f"supervisord for stack {stack.stack.name!r} (pid {self.pid}) is alive but does not answer on "
                    f"{stack.socket_path}; see {stack.logs_dir / 'supervisord.log'}")
        return (f"supervisord for stack {stack.stack.name!r} is not running (nothing answers on {stack.socket_path}); "
                "start the stack with `baremetal up`")


def read_pid(pidfile: Path) -> int | None:
    """The pid in a pidfile, or None when there is none or it holds no number."""
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_supervisord(pid: int, conf: Path) -> bool:
    try:
        command = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any("supervisord" in part for part in command) and str(conf) in command


def check(stack: Stack, client: SupervisorClient) -> DaemonCheck:
    """Where this stack's supervisord stands, telling a clean stop from a killed or wedged daemon."""
    pid = read_pid(stack.pidfile)
    if client.is_running():
        try:
            pid = client.pid()
        except SupervisorError:
            pass
        return DaemonCheck(DaemonState.RUNNING, pid)
    if pid and processes.is_alive(pid) and _is_our_supervisord(pid, stack.supervisord_conf):
        return DaemonCheck(DaemonState.UNRESPONSIVE, pid)
    if stack.pidfile.exists() or stack.socket_path.exists():
        return DaemonCheck(DaemonState.STALE, pid)
    return DaemonCheck(DaemonState.NOT_RUNNING, None)


def stack_processes(stack: Stack, supervisord_pid: int | None = None, alive: bool = False) -> list[psutil.Process]:
    """Every live process of this stack but supervisord (~20 ms: for up/down, not for status): see
    supervisord.leftovers for how they are found."""
    return leftovers.members(stack.socket_path, stack.run_dir, supervisord_pid, alive)


def clean_stale(stack: Stack, say: Callable[[str], None]) -> None:
    """After a supervisord died without cleaning up: end its orphaned programs (they would hold ports and
    GPU memory), then remove its socket, pidfile and process record."""
    orphans = stack_processes(stack, read_pid(stack.pidfile))
    if orphans:
        ended = processes.terminate(orphans)
        say(f"stopped {len(ended)} orphaned program process(es) left by the dead supervisord: {', '.join(ended)}")
    for path in (stack.socket_path, stack.pidfile, leftovers.record_path(stack.run_dir)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def supervisord_argv(conf: Path, python: str = sys.executable) -> list[str]:
    """supervisord in the foreground, as a child subreaper with umask 027 (launchers/subreaper.py): how
    `up` starts it and how the systemd unit runs it."""
    # -X utf8: the files are UTF-8 (syntax.py proves them so), whatever the locale of whoever runs `up`.
    return [python, "-m", "baremetal.launchers.subreaper", "--umask", "027", "--",
            python, "-X", "utf8", "-m", "supervisor.supervisord", "-n", "-c", str(conf)]


def start(stack: Stack, client: SupervisorClient, timeout_s: float = START_TIMEOUT_S) -> int:
    """Start supervisord on the stack's config, in a session of its own, and wait until it answers;
    returns its pid. What it says on stderr before it answers (a bad config) ends up in the error."""
    output = stack.run_dir / "supervisord.out"
    with open(output, "wb") as stderr:
        process = subprocess.Popen(supervisord_argv(stack.supervisord_conf), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.is_running():
            return client.pid()
        if process.poll() is not None:
            break
        time.sleep(0.05)
    else:
        raise SupervisorError(f"supervisord did not start within {timeout_s:.0f}s; "
                              f"see {stack.logs_dir / 'supervisord.log'}")
    text = output.read_text(encoding="utf-8", errors="replace").strip() or "(no output)"
    raise SupervisorError(f"could not start supervisord with {stack.supervisord_conf} "
                          f"(exit status {process.returncode}): {text[-1500:]}")


@contextlib.contextmanager
def stack_lock(stack: Stack, say: Callable[[str], None]) -> Iterator[None]:
    """Serialise up/down/start/stop on one stack (two operators, or a boot unit and a person)."""
    run = stack.root / "run"
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(run / "baremetal.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another baremetal command on this stack to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
