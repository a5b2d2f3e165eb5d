"""Processes through psutil, the one seam for them: trees, liveness, signals, ending them, and a cheap
follower of one program's tree (its CPU time and stopped members) for the watchdog.

supervisord knows one pid per program; vLLM's engine core, its workers and tensor-parallel ranks are
descendants of it. Processes that escaped the tree (re-parented daemons) are still recognised by the
`SUPERVISOR_PROCESS_NAME` and `SUPERVISOR_SERVER_URL` variables supervisord puts in every child's
environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field

import psutil

FROZEN_STATES = (psutil.STATUS_STOPPED,)        # SIGSTOP / job control (not a debugger's tracing stop)


def describe(process: psutil.Process) -> str:
    """'pid (name)' for messages; the name is the process title where one was set (VLLM::EngineCore)."""
    try:
        command = process.cmdline()
        title = command[0] if len(command) == 1 else process.name()
    except psutil.Error:
        title = "?"
    return f"{process.pid} ({title})"


def program_of(pid: int) -> str | None:
    """The supervisord program a process belongs to, from its environment or its nearest ancestor's; None
    if not ours or unreadable. Ancestors count because a process that sets its title (vLLM's
    `VLLM::EngineCore`, through setproctitle) overwrites its own environment block."""
    try:
        process = psutil.Process(pid)
        lineage = [process] + process.parents()
    except (psutil.Error, OSError):
        return None
    for member in lineage:
        try:
            name = member.environ().get("SUPERVISOR_PROCESS_NAME")
        except (psutil.Error, OSError):
            continue
        if name:
            return name
    return None


def tree(pid: int | None) -> list[psutil.Process]:
    """`pid` and all its descendants ([] if `pid` is gone)."""
    if not pid or pid <= 0:
        return []
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def descendants(pid: int | None) -> list[psutil.Process]:
    """The live descendants of `pid` (empty when it is gone)."""
    return tree(pid)[1:]


def with_environment(name: str, value: str) -> list[psutil.Process]:
    """Every live process (but this one) whose environment has `name` = `value`. Reads /proc/*/environ of
    the user's processes (~20 ms): for up/down, not for a loop."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get(name) == value \
                    and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


@dataclass
class TreeReading:
    """What one look at a program's processes found."""

    cpu_s: float                                # CPU seconds the tree used since the previous reading
    elapsed_s: float                            # time since the previous reading (0 for the first)
    stopped: tuple[str, ...] = ()               # processes in state T (SIGSTOP), as 'pid (name)'
    pids: tuple[int, ...] = ()


@dataclass
class TreeWatcher:
    """Follows one program's process tree cheaply: children are rescanned every `rescan_s`, and each
    reading costs one /proc read per process."""

    root_pid: int
    rescan_s: float = 5.0
    _processes: list[psutil.Process] = field(default_factory=list)
    _cpu_by_pid: dict[int, float] = field(default_factory=dict)
    _scanned_s: float = float("-inf")
    _read_s: float | None = None
    last_pids: tuple[int, ...] = ()

    def read(self) -> TreeReading:
        """CPU used since the last call, and which processes are stopped."""
        now = time.monotonic()
        elapsed_s = now - self._read_s if self._read_s is not None else 0.0
        self._read_s = now
        if now - self._scanned_s >= self.rescan_s or not self._processes:
            self._processes = tree(self.root_pid)
            self._scanned_s = now
        used_s, stopped, alive = 0.0, [], []
        for process in self._processes:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    status = process.status()
            except psutil.Error:
                self._scanned_s = float("-inf")        # one is gone: rescan next time
                continue
            alive.append(process)
            total = times.user + times.system
            used_s += max(0.0, total - self._cpu_by_pid.get(process.pid, total))
            self._cpu_by_pid[process.pid] = total
            if status in FROZEN_STATES:
                stopped.append(describe(process))
        self._processes = alive
        self.last_pids = tuple(p.pid for p in alive)
        return TreeReading(cpu_s=used_s, elapsed_s=elapsed_s, stopped=tuple(stopped), pids=self.last_pids)


def in_session(session_id: int) -> list[psutil.Process]:
    """Every live process (but this one) of session `session_id` (one pass over /proc, ~20 ms)."""
    return _every(lambda pid: os.getsid(pid) == session_id)


def in_group(group_id: int) -> list[psutil.Process]:
    """Every live process (but this one) of process group `group_id` (one pass over /proc, ~20 ms)."""
    return _every(lambda pid: os.getpgid(pid) == group_id)


def _every(test) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and test(process.pid) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def unit_cgroup(cgroup_text: str, unit_prefix: str = "baremetal-") -> tuple[str, str] | None:
    """(hierarchy, path) of the systemd service cgroup named in a /proc/PID/cgroup text when the service is
    one of ours (`baremetal-*.service`), else None. hierarchy is "unified" (cgroup v2) or "systemd" (the v1
    name=systemd tree). Pure."""
    for line in cgroup_text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        leaf = path.rstrip("/").rsplit("/", 1)[-1]
        if leaf.startswith(unit_prefix) and leaf.endswith(".service"):
            if number == "0" and controllers == "":
                return "unified", path
            if controllers == "name=systemd":
                return "systemd", path
    return None


def cgroup_members(pid: int, cgroup_root: str = "/sys/fs/cgroup") -> list[psutil.Process]:
    """The processes in the systemd unit cgroup of `pid` (with its sub-cgroups), when `pid` runs in a
    baremetal unit; [] otherwise. Where systemd runs the stack, nothing the stack starts leaves it."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            found = unit_cgroup(handle.read())
    except OSError:
        return []
    if found is None:
        return []
    hierarchy, path = found
    candidates = [f"{cgroup_root}/unified", cgroup_root] if hierarchy == "unified" else [f"{cgroup_root}/systemd"]
    pids: set[int] = set()
    for base in candidates:
        top = base + path
        if not os.path.isfile(f"{top}/cgroup.procs"):
            continue
        for folder, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    with open(f"{folder}/cgroup.procs", encoding="utf-8") as handle:
                        pids |= {int(line) for line in handle if line.strip()}
        break
    pids.discard(os.getpid())
    return by_pid(sorted(pids))


def not_mine(found: list[psutil.Process]) -> list[psutil.Process]:
    """`found` without this process and its ancestors (never end the command that is ending the stack)."""
    mine = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        mine |= {parent.pid for parent in psutil.Process().parents()}
    return [process for process in found if process.pid not in mine]


def by_pid(pids: list[int]) -> list[psutil.Process]:
    """Process objects for the pids still alive."""
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return found


def resume(processes: list[psutil.Process]) -> list[int]:
    """SIGCONT every stopped process, so that it can act on the stop signal that follows."""
    resumed = []
    for process in processes:
        try:
            if process.status() in FROZEN_STATES:
                process.send_signal(signal.SIGCONT)
                resumed.append(process.pid)
        except psutil.Error:
            continue
    return resumed


def wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to `timeout_s` for every process to end; the ones still alive."""
    _gone, alive = psutil.wait_procs(processes, timeout=max(0.0, timeout_s))
    return [p for p in alive if _alive(p)]


def wait_pid_gone(pid: int, timeout_s: float) -> bool:
    """Wait for `pid` to exit; True if it did within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def kill(processes: list[psutil.Process]) -> list[int]:
    """SIGKILL each process (a stopped one dies too); the pids signalled."""
    killed = []
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
            killed.append(process.pid)
        except psutil.Error:
            continue
    return killed


def terminate(processes: list[psutil.Process], grace_s: float = 5.0) -> list[str]:
    """SIGTERM, then SIGKILL after `grace_s`; returns "pid (command)" of each process that had to be ended."""
    ended = []
    for process in processes:
        try:
            ended.append(f"{process.pid} ({' '.join(process.cmdline())[:120]})")
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            continue
    alive = wait_gone(processes, grace_s)
    kill(alive)
    psutil.wait_procs(alive, timeout=grace_s)
    return ended


def signal_pid(pid: int, signal_number: int) -> None:
    """Send a signal to a pid that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal_number)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def still_alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` that still run (the same process: psutil checks its start time)."""
    return [process for process in processes if _alive(process)]


def is_alive(pid: int | None) -> bool:
    """True while `pid` names a live process; a zombie (exited, not yet reaped) counts as gone."""
    if not pid:
        return False
    try:
        return _alive(psutil.Process(pid))
    except psutil.Error:
        return False


def start_time(pid: int) -> float | None:
    """When `pid` started (epoch seconds, psutil's reading), None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None
