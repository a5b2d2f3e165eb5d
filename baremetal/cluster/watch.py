"""The head's watch over its cluster, one tick at a time: the interface the watchdog drives.

    watch = ClusterWatch(stack)            # on the head of a cluster
    tick = watch.tick(now_s)               # every watchdog tick
    tick.events     -> lines for the event log ("node w1 lost: ...", "node w1 alive again")
    tick.restarts   -> programs to restart now, each with its reason (the watchdog restarts them its way)
    tick.states     -> every node's state, for the state file and metrics

Reading the monitor's file is the only effect (injected as `read`); the decisions are policy's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from baremetal.cluster.members import (ALIVE, MISSING, Membership, NodeState, node_states,
                                       read_membership)
from baremetal.cluster.policy import Restart, known, restarts
from baremetal.config.model import Stack


@dataclass(frozen=True)
class ClusterTick:
    """What one tick of the cluster watch found."""

    states: list[NodeState]
    restarts: list[Restart] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


def transitions(previous: list[NodeState] | None, current: list[NodeState]) -> list[str]:
    """One line per node whose state changed, for the event log. Pure."""
    before = {state.name: state for state in previous or []}
    lines = []
    for state in current:
        old = before.get(state.name)
        if old is not None and old.state == state.state and old.node_id == state.node_id:
            continue
        if state.state == ALIVE and (old is None or old.state == MISSING):
            lines.append(f"node {state.name} ({state.address}) is in the Ray cluster")
        elif state.state == ALIVE:
            lines.append(f"node {state.name} ({state.address}) is " +
                         ("back in the Ray cluster" if old and old.state != ALIVE else "in the Ray cluster again "
                          "(it restarted)"))
        else:
            lines.append(f"node {state.name} ({state.address}) is {state.state}" +
                         (f": {state.detail}" if state.detail else ""))
    return lines


class ClusterWatch:
    """What the head remembers of its cluster between ticks."""

    def __init__(self, stack: Stack, read: Callable[[Path], Membership | None] = read_membership):
        assert stack.cluster is not None and stack.is_head
        self.stack = stack
        self.path = stack.membership_path
        self.read = read
        self.previous: list[NodeState] | None = None
        self.reported: list[NodeState] | None = None

    def tick(self, now_s: float) -> ClusterTick:
        """Read the monitor's report and say what changed and what to restart."""
        current = node_states(self.stack.cluster, self.read(self.path), now_s)
        actions = restarts(self.stack, self.previous, current)
        events = transitions(self.reported, current)
        self.reported = current
        self.previous = known(self.previous, current)
        return ClusterTick(states=current, restarts=actions, events=events)
