"""The head's watch over models on other nodes: their supervisord is not the head's, so the head probes
them like a client would and says, in the watchdog's state file, which ones to route around.

    watch = RemoteWatch(stack, http, probe_timeout_s, unhealthy_after)
    entries = watch.tick(now_s)       # PROGRAM -> entry of watchdog.json's "programs"

An entry has the watchdog's keys (`phase`, `healthy`, `reason`, `since_s`) plus `node` and `remote`. A
model that never answered is `loading`; one that answers is `ready`; one that stops answering stays
`ready` but unhealthy for `unhealthy_after - 1` probes (the gateway then tries it last), then is
`unreachable` (the gateway skips it) until it answers again. A frozen worker accepts connections and
never answers: without this, each request routed to it would hang. Restarting it is its own node's job.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from baremetal.plan.cluster import remote_probes
from baremetal.config.model import Stack
from baremetal.stack.probes import ProbeResult, probe

LOADING, READY, UNREACHABLE = "loading", "ready", "unreachable"


@dataclass(frozen=True)
class RemoteState:
    """What the head knows of one program on another node."""

    phase: str = LOADING
    failures: int = 0            # consecutive failed probes
    since_s: float = 0.0
    reason: str = "not answered yet"


def advance_remote(state: RemoteState, result: ProbeResult, unhealthy_after: int, now_s: float) -> RemoteState:
    """The state after one more probe. Pure."""
    if result.ok:
        if state.phase == READY and state.failures == 0:
            return state
        return RemoteState(READY, 0, now_s if state.phase != READY else state.since_s, result.detail)
    failures = state.failures + 1
    if state.phase == LOADING:
        return replace(state, failures=failures, reason=result.detail, since_s=state.since_s or now_s)
    if state.phase == READY and failures < unhealthy_after:
        return replace(state, failures=failures, reason=result.detail)
    since = now_s if state.phase != UNREACHABLE else state.since_s
    return RemoteState(UNREACHABLE, failures, since, f"{failures} probes failed in a row: {result.detail}")


def entry(state: RemoteState, node: str) -> dict[str, Any]:
    """The state as a watchdog.json program entry."""
    return {"phase": state.phase, "healthy": state.phase == READY and state.failures == 0,
            "reason": state.reason, "since_s": state.since_s, "node": node, "remote": True}


class RemoteWatch:
    """Probes the models on other nodes once per tick, all at once."""

    def __init__(self, stack: Stack, http: Any, probe_timeout_s: float, unhealthy_after: int):
        self.probes = remote_probes(stack)
        self.nodes = {m.program: m.node or "" for m in stack.models} | {p.name: p.node or "" for p in stack.programs}
        self.http = http
        self.probe_timeout_s = probe_timeout_s
        self.unhealthy_after = unhealthy_after
        self.states = {name: RemoteState() for name in self.probes}
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(self.probes)), thread_name_prefix="remote-probe") \
            if self.probes else None

    def tick(self, now_s: float) -> dict[str, dict[str, Any]]:
        """Probe every remote program and return their entries."""
        if self.pool is None:
            return {}
        names = list(self.probes)
        results = self.pool.map(lambda name: probe(self.probes[name], self.http, timeout_s=self.probe_timeout_s),
                                names)
        for name, result in zip(names, results, strict=True):
            self.states[name] = advance_remote(self.states[name], result, self.unhealthy_after, now_s)
        return {name: entry(self.states[name], self.nodes[name]) for name in names}

    def close(self) -> None:
        """Stop the probe threads (a probe in flight ends with its timeout)."""
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)
