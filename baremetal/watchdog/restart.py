"""Clean restarts: keep the evidence, stop the whole program, make sure its processes and GPU memory are
gone, then start it again.

A hung program does not stop by being asked: a SIGSTOPped process cannot act on SIGTERM (so it gets
SIGCONT first), and a vLLM API server with a frozen engine was seen ignoring SIGTERM for 9 s (so
whatever is left after `kill_after` gets SIGKILL). supervisord does the stop (stopasgroup), so it
knows the stop is intended and does not restart the program behind our back.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from baremetal.errors import BaremetalError
from baremetal.host import processes
from baremetal.host.nvml import GpuMonitor
from baremetal.supervisord.client import SupervisorClient
from baremetal.supervisord.states import ALIVE_STATES

LOG_TAIL_BYTES = 6000
LOG_TAIL_LINES = 40
HELD_BYTES = 2 << 30          # memory no process accounts for, after ours are gone: a GPU that leaks (idle: ~0.5 GiB)
HELD_WAIT_S = 5.0


@dataclass(frozen=True)
class RestartReport:
    """What a restart (or a stop) did, for the event log."""

    program: str
    pids: tuple[int, ...] = ()              # its processes when the stop began
    resumed: tuple[int, ...] = ()           # were stopped (SIGSTOP): sent SIGCONT so they could exit
    killed: tuple[int, ...] = ()            # still alive after kill_after: SIGKILLed
    gpu_leftovers: tuple[int, ...] = ()     # still held its GPUs after the stop: SIGKILLed
    gpu_memory_freed: bool | None = None    # None: no GPU to check (CPU program, or no NVML)
    gpu_memory_held: tuple[tuple[int, int], ...] = ()   # (GPU, bytes) held by no process once ours were gone
    stop_s: float = 0.0
    started: bool = False
    error: str | None = None

    def to_json(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def summary(self, say_start: bool = True) -> str:
        """One line for the event; `say_start=False` when what follows the stop is told elsewhere (a move)."""
        parts = [f"stopped in {self.stop_s:.1f}s"]
        if self.resumed:
            parts.append(f"resumed stopped pids {list(self.resumed)}")
        if self.killed:
            parts.append(f"SIGKILLed pids {list(self.killed)} that ignored the stop signal")
        if self.gpu_leftovers:
            parts.append(f"SIGKILLed pids {list(self.gpu_leftovers)} still holding its GPUs")
        if self.gpu_memory_freed is not None:
            parts.append("its GPU memory is free" if self.gpu_memory_freed else "its GPU memory is STILL held")
        for gpu, held in self.gpu_memory_held:
            parts.append(f"GPU {gpu}: {held / 2**30:.1f} GiB held by no process after ours were gone")
        if say_start:
            parts.append("started again" if self.started else "left stopped")
        if self.error:
            parts.append(f"error: {self.error}")
        return "; ".join(parts)


def stop_and_start(client: SupervisorClient, name: str, gpus: tuple[int, ...], monitor: GpuMonitor | None,
                   kill_after_s: float, start: bool, keep_going: Callable[[], bool] = lambda: True) -> RestartReport:
    """Stop `name` completely, then (if `start` and `keep_going()`) start it; never raises."""
    began = time.monotonic()
    report: dict[str, Any] = {"program": name}
    try:
        info = client.process(name)
        if info.state in ALIVE_STATES:
            report |= _stop(client, name, info.pid, kill_after_s)
        report |= _free_gpus(name, gpus, monitor, set(report.get("pids", ())))
        report["stop_s"] = time.monotonic() - began
        if start and keep_going() and not report.get("gpu_memory_held"):   # a leaking GPU: re-placed instead
            client.start(name, wait=False)
            report["started"] = True
    except BaremetalError as error:
        report["error"] = str(error)
        report["stop_s"] = time.monotonic() - began
    return RestartReport(**report)


def _stop(client: SupervisorClient, name: str, pid: int, kill_after_s: float) -> dict[str, Any]:
    members = processes.tree(pid)
    resumed = processes.resume(members)
    try:
        client.stop(name, wait=False)     # supervisord signals the whole group (stopasgroup)
    except BaremetalError:
        pass                              # a program that just exited is fine; the kill below covers the rest
    survivors = processes.wait_gone(members, kill_after_s)
    killed = processes.kill(survivors)
    processes.wait_gone(survivors, 5.0)
    _wait_until(lambda: client.process(name).state not in ALIVE_STATES, 10.0)
    return {"pids": tuple(p.pid for p in members), "resumed": tuple(resumed), "killed": tuple(killed)}


def _free_gpus(name: str, gpus: tuple[int, ...], monitor: GpuMonitor | None, pids: set[int]) -> dict[str, Any]:
    """Kill whatever of this program still holds its GPUs; wait until NVML shows none of it there."""
    if not gpus or monitor is None or not monitor.available:
        return {}

    def holders() -> list[int]:
        found = [p.pid for s in monitor.sample() if s.index in gpus for p in s.processes or ()]
        return [pid for pid in found if pid in pids or processes.program_of(pid) == name]

    killed = processes.kill(processes.by_pid(holders()))
    freed = _wait_until(lambda: not holders(), 15.0)
    held: dict[int, int] = {}

    def unaccounted() -> bool:
        held.clear()
        for sample in monitor.sample():
            if sample.index in gpus and sample.memory_used_bytes is not None and sample.processes is not None:
                listed = sum(p.memory_used_bytes or 0 for p in sample.processes)
                if sample.memory_used_bytes - listed >= HELD_BYTES:
                    held[sample.index] = sample.memory_used_bytes - listed
        return not held
    if freed:
        _wait_until(unaccounted, HELD_WAIT_S, interval_s=0.25)
    return {"gpu_leftovers": tuple(killed), "gpu_memory_freed": freed, "gpu_memory_held": tuple(sorted(held.items()))}


def _wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return True
        except BaremetalError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def log_tail(client: SupervisorClient, name: str) -> dict[str, list[str]]:
    """The last lines of a program's stdout and stderr logs, as evidence; {} entries when unreadable."""
    tails: dict[str, list[str]] = {}
    for stream, stderr in (("stdout", False), ("stderr", True)):
        try:
            text = client.tail(name, LOG_TAIL_BYTES, stderr=stderr)
        except BaremetalError as error:
            text = f"(could not read the log: {error})"
        lines = text.splitlines()
        if len(text) >= LOG_TAIL_BYTES:
            lines = lines[1:]             # the first line of a byte-tail is cut
        tails[stream] = lines[-LOG_TAIL_LINES:]
    return tails
