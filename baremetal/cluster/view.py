"""The cluster as `baremetal status` shows it on the head: every node with Ray's view of it, and the models
placed on each node with a quick probe of the ones on other nodes (their supervisord is not the head's)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from baremetal.cluster.members import ALIVE, NodeState, node_states, read_membership
from baremetal.plan.cluster import remote_probes
from baremetal.config.model import Stack
from baremetal.stack.probes import ProbeResult, probe


@dataclass(frozen=True)
class RemoteProgram:
    """A model or program on another node, as the head's probe found it."""

    name: str
    node: str
    ready: bool
    detail: str


@dataclass(frozen=True)
class ClusterView:
    """Everything the cluster part of `status` shows."""

    nodes: list[NodeState]
    remote: list[RemoteProgram]
    placed: dict[str, list[str]]       # node -> programs placed on it (models and [[program]]s)
    monitor_age_s: float | None

    @property
    def healthy(self) -> bool:
        """Every node in Ray and every remote program answering."""
        return all(node.state == ALIVE for node in self.nodes) and all(program.ready for program in self.remote)


def collect_cluster(stack: Stack, http: Any, now_s: float | None = None, probe_timeout_s: float = 0.5) -> ClusterView:
    """Read the monitor's file and probe the models on other nodes (all at once, short timeout)."""
    assert stack.cluster is not None
    now_s = time.time() if now_s is None else now_s
    membership = read_membership(stack.membership_path)
    probes = remote_probes(stack)
    node_of = {m.program: m.node for m in stack.models} | {p.name: p.node for p in stack.programs}
    results: dict[str, ProbeResult] = {}
    if probes:
        with ThreadPoolExecutor(max_workers=min(16, len(probes))) as pool:
            answers = pool.map(lambda item: probe(item[1], http, timeout_s=probe_timeout_s), probes.items())
            results = dict(zip(probes, answers, strict=True))
    placed: dict[str, list[str]] = {node.name: [] for node in stack.cluster.nodes}
    for program, node in node_of.items():
        placed.setdefault(node or "", []).append(program)
    remote = [RemoteProgram(name, node_of[name] or "", result.ok, result.detail) for name, result in results.items()]
    return ClusterView(nodes=node_states(stack.cluster, membership, now_s), remote=remote, placed=placed,
                       monitor_age_s=now_s - membership.written_s if membership else None)


def cluster_json(view: ClusterView) -> dict[str, Any]:
    """The machine view, for `status --json`."""
    return {
        "healthy": view.healthy,
        "monitor_age_s": view.monitor_age_s,
        "nodes": [{"name": n.name, "role": n.role, "address": n.address, "state": n.state, "since_s": n.since_s,
                   "ray_node_id": n.node_id, "gpus_total": n.gpus_total, "gpus_free": n.gpus_free,
                   "detail": n.detail, "programs": view.placed.get(n.name, [])} for n in view.nodes],
        "remote_programs": [{"name": p.name, "node": p.node, "ready": p.ready, "detail": p.detail}
                            for p in view.remote],
    }
