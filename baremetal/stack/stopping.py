"""Stopping programs for a planned change without mistaking a slow stop for a wedged supervisord.

supervisord's blocking stopProcess does not answer until the program is gone, which for vLLM under load
(it ignores SIGTERM) means stopwaitsecs: longer than any sane XML-RPC timeout, so the caller used to
give up on a supervisord that was merely waiting. Here the stop is asked without waiting, and the
program's state is polled until it is down: supervisord sends SIGKILL itself after stopwaitsecs; what
is still alive a few seconds past that is SIGKILLed here. Stopped (SIGSTOPped) processes are resumed
first, as a frozen process cannot act on the stop signal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

from baremetal.errors import BaremetalError
from baremetal.host import processes
from baremetal.supervisord.client import SupervisorClient
from baremetal.supervisord.states import ALIVE_STATES

STOP_SLACK_S = 5.0            # past stopwaitsecs, supervisord's own SIGKILL should have worked
UNKNOWN_STOPWAIT_S = 30.0     # for programs no longer in the stack file
POLL_S = 0.1


@dataclass(frozen=True)
class Stopped:
    """How one program's stop went."""

    program: str
    seconds: float
    killed: tuple[int, ...] = ()      # pids SIGKILLed here, after stopwaitsecs and the slack

    def summary(self) -> str:
        killed = f"; SIGKILLed {list(self.killed)} still alive past stopwaitsecs" if self.killed else ""
        return f"stopped {self.program} ({self.seconds:.1f}s{killed})"


def stop_programs(client: SupervisorClient, names: list[str], stopwait_s: Mapping[str, float],
                  clock: Callable[[], float] = time.monotonic) -> list[Stopped]:
    """Stop `names` together and wait until supervisord has each down; never blocks on one XML-RPC call."""
    began = clock()
    infos = {info.name: info for info in client.processes()}
    trees = {}
    for name in names:
        info = infos.get(name)
        if info is None or info.state not in ALIVE_STATES:
            continue
        trees[name] = processes.tree(info.pid)
        processes.resume(trees[name])
        client.stop(name, wait=False)
    done: dict[str, Stopped] = {name: Stopped(name, 0.0) for name in names if name not in trees}
    killed: dict[str, tuple[int, ...]] = {}
    while len(done) < len(names):
        states = {info.name: info.state for info in client.processes()}
        now = clock()
        for name in [name for name in names if name not in done]:
            if states.get(name) not in ALIVE_STATES:
                done[name] = Stopped(name, now - began, killed.get(name, ()))
            elif name not in killed and now - began > stopwait_s.get(name, UNKNOWN_STOPWAIT_S) + STOP_SLACK_S:
                killed[name] = tuple(processes.kill(processes.still_alive(trees[name])))
            elif name in killed and now - began > stopwait_s.get(name, UNKNOWN_STOPWAIT_S) + 3 * STOP_SLACK_S:
                raise BaremetalError(f"{name} is still {states.get(name).name} after SIGKILL: supervisord does "
                                     "not see it stop; see its log under <root>/logs/supervisord.log")
        if len(done) < len(names):
            time.sleep(POLL_S)
    return [done[name] for name in names]
