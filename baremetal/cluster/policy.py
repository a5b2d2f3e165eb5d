"""What the head does when the cluster changes. Pure functions of node states, table-tested.

- A node that had GPUs in Ray and is gone (lost, or back under a new Ray id before anyone looked) takes
  down whatever ran on it: every program that drives the cluster (a vLLM server on Ray's executor,
  a [[program]] with ray_gpus) is restarted once. Restarting stops the hung server at once (a vLLM whose
  node is lost keeps answering /health 200 until a 300 s RPC timeout) and frees the GPUs of the nodes that
  remain; its launcher then waits until the cluster has the GPUs again and starts it when the node is back.
- Routing does not follow Ray: a FastChat worker on a node whose Ray died may serve on. The head probes
  models on other nodes like its own (`remote_probes` in plan/cluster.py) and routes by those verdicts.
- When the head cannot tell (the monitor is silent, the GCS does not answer), nothing is decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from baremetal.cluster.members import ALIVE, UNKNOWN, NodeState
from baremetal.config.model import Stack


@dataclass(frozen=True)
class Restart:
    """A program to restart, and why (for the event log)."""

    program: str
    reason: str


def ray_programs(stack: Stack) -> list[str]:
    """The head's programs that drive the Ray cluster: they restart when a GPU node is lost."""
    if stack.cluster is None:
        return []
    head = stack.cluster.head.name
    return [m.program for m in stack.models if m.uses_ray and m.node == head] + \
        [p.name for p in stack.programs if p.ray_gpus is not None and p.node == head]


def known(previous: list[NodeState] | None, current: list[NodeState]) -> list[NodeState]:
    """The states to remember: the current ones, unless the head cannot tell now (then the last known)."""
    if previous is not None and current and all(state.state == UNKNOWN for state in current):
        return previous
    return current


def lost_nodes(previous: list[NodeState] | None, current: list[NodeState]) -> list[NodeState]:
    """Nodes that were alive with GPUs before and whose Ray incarnation is gone now."""
    if previous is None or any(state.state == UNKNOWN for state in current):
        return []
    now = {state.name: state for state in current}
    gone = []
    for before in previous:
        if before.state != ALIVE or before.gpus_total <= 0:
            continue
        after = now.get(before.name)
        if after is None or after.state != ALIVE or after.node_id != before.node_id:
            gone.append(before)
    return gone


def restarts(stack: Stack, previous: list[NodeState] | None, current: list[NodeState]) -> list[Restart]:
    """The programs to restart now, each once, because a node they use is gone."""
    gone = lost_nodes(previous, current)
    if not gone:
        return []
    names = ", ".join(state.name for state in gone)
    why = {state.name: state for state in current}
    details = "; ".join(f"{state.name}: {why[state.name].detail or why[state.name].state}"
                        for state in gone if state.name in why)
    reason = f"Ray lost node{'s' if len(gone) > 1 else ''} {names}" + (f" ({details})" if details else "")
    return [Restart(program, reason) for program in ray_programs(stack)]
