"""The cluster part of `status` and `cluster status` as text: the node table, then what does not answer."""

from __future__ import annotations

import time

from baremetal.cli.common import table
from baremetal.cli.status_view import duration_text
from baremetal.cluster.members import ALIVE
from baremetal.cluster.view import ClusterView


def format_cluster(view: ClusterView, gcs_address: str) -> str:
    """The node table, then the programs on other nodes that do not answer."""
    now = time.time()
    alive = sum(1 for node in view.nodes if node.state == ALIVE)
    head = f"cluster (Ray at {gcs_address}): {alive}/{len(view.nodes)} node(s) alive"
    if view.monitor_age_s is None:
        head += "; no report from ray-monitor yet"
    remote = {program.name: program for program in view.remote}
    rows = []
    for node in view.nodes:
        since = duration_text(now - node.since_s) if node.since_s else "-"
        gpus = "-" if node.state != ALIVE else (f"{node.gpus_free:g}/{node.gpus_total:g}" if node.gpus_free is not None
                                                 else f"?/{node.gpus_total:g}")
        programs = [name + ("" if name not in remote else (" ok" if remote[name].ready else " DOWN"))
                    for name in view.placed.get(node.name, [])]
        rows.append([node.name, node.role, node.address, node.state.upper() if node.state != ALIVE else node.state,
                     since, gpus, ", ".join(programs) or "-"])
    notes = [f"{node.name}: {node.detail}" for node in view.nodes if node.state != ALIVE and node.detail]
    notes += [f"{program.name} (on {program.node}): {program.detail}" for program in view.remote if not program.ready]
    return "\n".join([head, "", table(rows, ["NODE", "ROLE", "ADDRESS", "RAY", "SINCE", "GPUS FREE", "PROGRAMS"])]
                     + ([""] + notes if notes else []))
