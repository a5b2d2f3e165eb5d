"""What a program's previous instance left running, ended before it runs beside the next one.

A vLLM API server killed with SIGKILL leaves its VLLM::EngineCore and VLLM::Worker processes running
(they do not watch their parent), holding their memory (GPU memory on a GPU host), and supervisord
starts a new server beside them; every such kill adds a set. supervisord starts each program in a
process group of its own (pgid = the program's pid), which the engine's processes inherit. So when the
watchdog sees a program's pid change, or the process gone, it ends what is still in the previous
instance's group: SIGCONT (a stopped one could not act on SIGTERM), SIGTERM, SIGKILL after a grace.

A member counts as that instance's only when it started after the instance did (its start time, from
the kernel), and only while the instance's own pid is gone (a group id cannot be reused while any
member lives, so the members of a group whose leader is gone are the leader's). One tick of the watchdog
(its interval) passes between the kill and the end of what it left; the new instance's engine core is
started only once the new API server has loaded its model, so the two do not hold memory side by side.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Iterable

from baremetal.host import processes
from baremetal.supervisord.states import ALIVE_STATES

CLOCK_SLACK_S = 1.0       # psutil dates processes from the boot time, which /proc gives in whole seconds
GRACE_S = 10.0            # SIGTERM to SIGKILL


@dataclass(frozen=True)
class Instance:
    """One run of a program: its pid and when it started (the kernel's time where seen, else supervisord's)."""

    program: str
    pid: int
    start_s: float


@dataclass(frozen=True)
class Member:
    """A process of a group, as read from /proc."""

    pid: int
    pgid: int
    start_s: float


def ended(seen: dict[str, Instance], infos: Iterable) -> list[Instance]:
    """The instances in `seen` that supervisord's process list (ProcessInfo) no longer shows: the program
    has another pid now, or none. Pure."""
    current = {info.name: info.pid for info in infos if info.state in ALIVE_STATES and info.pid}
    return [instance for name, instance in seen.items() if current.get(name) != instance.pid]


def left_by(instance: Instance, members: Iterable[Member]) -> list[Member]:
    """The members of `instance`'s process group that started after it did (never the leader). Pure."""
    since_s = instance.start_s - CLOCK_SLACK_S
    return [m for m in members if m.pgid == instance.pid and m.pid != instance.pid and m.start_s >= since_s]


class Remains:
    """Follows the programs' instances across ticks; ends what an instance that is gone left running, in
    `pool` (the tick does not wait), and tells `say(kind, message, program, details)`."""

    def __init__(self, pool: Executor, say: Callable[..., None], grace_s: float = GRACE_S):
        self.pool, self.say, self.grace_s = pool, say, grace_s
        self.seen: dict[str, Instance] = {}

    def look(self, infos: dict) -> None:
        """One tick's process list (name -> ProcessInfo)."""
        for instance in ended(self.seen, infos.values()):
            del self.seen[instance.program]
            self.pool.submit(self.end, instance)
        for name, info in infos.items():
            if info.state in ALIVE_STATES and info.pid and name not in self.seen:
                start_s = processes.start_time(info.pid)
                self.seen[name] = Instance(name, info.pid, start_s if start_s is not None else info.start_s)

    def end(self, instance: Instance) -> list[str]:
        """End what `instance` left (nothing while its pid still names it); the 'pid (command)' of each."""
        if self._still_there(instance):
            return []
        found = {p.pid: p for p in processes.in_group(instance.pid)}      # psutil keeps each one's start time
        members = left_by(instance, [Member(pid, instance.pid, p.create_time()) for pid, p in found.items()])
        chosen = [found[m.pid] for m in members]
        if not chosen:
            return []
        processes.resume(chosen)
        words = processes.terminate(chosen, self.grace_s)
        if words:
            self.say("remains", f"ended {len(words)} process(es) the previous instance (pid {instance.pid}) left "
                     f"running, so the new one does not run beside them: {', '.join(words)}", instance.program,
                     {"instance_pid": instance.pid, "pids": [p.pid for p in chosen]})
        return words

    def _still_there(self, instance: Instance) -> bool:
        """True if the instance's own process still runs after the grace (never end a live instance's group)."""
        def same() -> bool:
            start_s = processes.start_time(instance.pid)
            return start_s is not None and abs(start_s - instance.start_s) <= CLOCK_SLACK_S
        return same() and not processes.wait_pid_gone(instance.pid, self.grace_s) and same()
