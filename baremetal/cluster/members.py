"""Who is in the Ray cluster: the monitor's file (<root>/run/cluster.json) read back, and each node of the
stack file given a state. Reading is the only I/O; `node_states` is pure and table-tested.

A node is `alive` when Ray has an alive node at its address, `lost` when Ray knew it and declared it
dead (killed, frozen, unplugged), `missing` when Ray never saw it (not started, wrong token, firewall)
and `unknown` when the head itself cannot tell (the monitor's file is stale, or the GCS does not answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from baremetal.config.model import Cluster, NodeRole

RayNodeState = Literal["alive", "lost", "missing", "unknown"]
ALIVE, LOST, MISSING, UNKNOWN = "alive", "lost", "missing", "unknown"
STALE_AFTER_S = 15.0            # the monitor writes at least every 5 s


@dataclass(frozen=True)
class RayNode:
    """One node as Ray's GCS knows it; a node that rejoins gets a new node_id."""

    node_id: str
    address: str
    alive: bool
    is_head: bool
    start_s: float
    end_s: float | None
    death_reason: str
    gpus_total: float
    gpus_free: float | None


@dataclass(frozen=True)
class Membership:
    """The monitor's last report: every Ray node the GCS knows, or why it could not ask (`gcs_ok` false)."""

    written_s: float
    gcs_ok: bool
    error: str
    nodes: tuple[RayNode, ...]


@dataclass(frozen=True)
class NodeState:
    """A stack-file node and what Ray says of it."""

    name: str
    address: str
    role: NodeRole
    state: RayNodeState
    since_s: float | None       # alive: when it joined; lost: when Ray declared it dead
    node_id: str | None         # Ray's id of its current (or last) incarnation
    gpus_total: float
    gpus_free: float | None
    detail: str = ""


def parse_membership(document: Any) -> Membership | None:
    """The monitor's document as a Membership, or None when it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("written_s"), (int, float)):
        return None
    nodes = []
    for raw in document.get("nodes") or []:
        try:
            nodes.append(RayNode(node_id=str(raw["node_id"]), address=str(raw["address"]), alive=bool(raw["alive"]),
                                 is_head=bool(raw.get("is_head")), start_s=float(raw.get("start_s") or 0),
                                 end_s=float(raw["end_s"]) if raw.get("end_s") else None,
                                 death_reason=str(raw.get("death_reason") or ""),
                                 gpus_total=float(raw.get("gpus_total") or 0),
                                 gpus_free=float(raw["gpus_free"]) if raw.get("gpus_free") is not None else None))
        except (KeyError, TypeError, ValueError):
            continue
    return Membership(written_s=float(document["written_s"]), gcs_ok=bool(document.get("gcs_ok")),
                      error=str(document.get("error") or ""), nodes=tuple(nodes))


def read_membership(path: Path) -> Membership | None:
    """The monitor's last document, or None when there is none (yet) or it cannot be read."""
    try:
        return parse_membership(json.loads(path.read_bytes()))
    except (OSError, ValueError):
        return None


def node_states(cluster: Cluster, membership: Membership | None, now_s: float,
                stale_after_s: float = STALE_AFTER_S) -> list[NodeState]:
    """Each node of `cluster` with its state, in stack-file order. Pure."""
    if membership is None or now_s - membership.written_s > stale_after_s:
        why = "no word from the ray-monitor program" if membership is None else \
            f"the ray-monitor program last wrote {now_s - membership.written_s:.0f}s ago"
        return [_unknown(node, why) for node in cluster.nodes]
    if not membership.gcs_ok:
        return [_unknown(node, f"Ray's head does not answer: {membership.error}") for node in cluster.nodes]
    states = []
    for node in cluster.nodes:
        seen = [ray_node for ray_node in membership.nodes if ray_node.address == node.address]
        alive = [ray_node for ray_node in seen if ray_node.alive]
        if alive:
            newest = max(alive, key=lambda ray_node: ray_node.start_s)
            states.append(NodeState(node.name, node.address, node.role, ALIVE, newest.start_s, newest.node_id,
                                    newest.gpus_total, newest.gpus_free))
        elif seen:
            last = max(seen, key=lambda ray_node: ray_node.end_s or ray_node.start_s)
            states.append(NodeState(node.name, node.address, node.role, LOST, last.end_s, last.node_id,
                                    last.gpus_total, None, last.death_reason))
        else:
            states.append(NodeState(node.name, node.address, node.role, MISSING, None, None, 0.0, None,
                                    "Ray has never seen this node: is its ray program running, with the token?"))
    return states


def _unknown(node, why: str) -> NodeState:
    return NodeState(node.name, node.address, node.role, UNKNOWN, None, None, 0.0, None, why)
