"""Checks across [cluster] and the models and programs placed on its nodes."""

from __future__ import annotations

from baremetal.config.cluster import RAY_SOCKET_SUFFIX_BYTES, UNIX_SOCKET_PATH_MAX
from baremetal.config.fields import Problems
from baremetal.config.model import FASTCHAT_ENGINES, Stack, connect_host

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def check_cluster(stack: Stack, problems: Problems) -> None:
    """Record every problem of a cluster stack that no single field shows."""
    cluster = stack.cluster
    assert cluster is not None
    head = cluster.head.name
    for model in stack.models:
        path = f"model[{model.index}]"
        if model.uses_ray:
            _check_ray_model(stack, model, problems)
        elif model.node != head and (model.advertise or connect_host(model.host)) in LOOPBACK:
            problems.add(f"{path}.host", f"{model.name!r} runs on node {model.node!r} but listens on {model.host}: the "
                         "head's gateway cannot reach it; remove host (it then binds the node's address)")
    for program in stack.programs:
        if program.ray_gpus is not None and program.node != head:
            problems.add(f"program[{program.index}].node", "programs that use Ray (ray_gpus) run on the head, where "
                         "the cluster is watched; remove node")
    remote_fastchat = [m for m in stack.models if m.engine in FASTCHAT_ENGINES and m.node != head]
    if remote_fastchat and stack.controller.host in LOOPBACK:
        problems.add("controller.host", f"FastChat workers on other nodes ({', '.join(m.name for m in remote_fastchat)}) "
                     f"register with the controller, which listens on {stack.controller.host} only; remove host "
                     f"(it then listens on the head's address {cluster.head.address})")
    _check_node_gpus(stack, problems)
    for index, node in enumerate(cluster.nodes):
        socket = node.root / "run" / "supervisor.sock"
        if len(str(socket).encode()) > UNIX_SOCKET_PATH_MAX:
            problems.add(f"cluster.node[{index}].root", f"the supervisord socket {socket} would pass the "
                         f"{UNIX_SOCKET_PATH_MAX}-byte limit of unix socket paths; choose a shorter root")
        # The local node's temp dir is checked where it is read; other nodes derive theirs from their root.
        if node.root != cluster.local_node.root and cluster.temp_dir == cluster.local_node.root / "ray" and \
                len(str(node.root / "ray").encode()) + RAY_SOCKET_SUFFIX_BYTES > UNIX_SOCKET_PATH_MAX:
            problems.add(f"cluster.node[{index}].root", f"Ray's sockets under {node.root / 'ray'} would pass the "
                         f"{UNIX_SOCKET_PATH_MAX}-byte limit of unix socket paths; set [cluster] temp_dir to a "
                         "short path")
    if not stack.watchdog.enabled:
        problems.warn("watchdog.enabled", "without the watchdog, nobody restarts the models that span nodes when "
                      "a node is lost")


def _check_ray_model(stack: Stack, model, problems: Problems) -> None:
    cluster = stack.cluster
    path = f"model[{model.index}]"
    if model.node != cluster.head.name:
        problems.add(f"{path}.node", f"models on Ray (distributed_backend = \"ray\") run on the head "
                     f"({cluster.head.name!r}) and use the GPUs of every node through Ray; remove node")
    if model.env != cluster.env:
        problems.add(f"{path}.env", f"Ray runs this model's workers on every node in the cluster's env "
                     f"({cluster.env!r}); set env = {cluster.env!r} or [cluster] env = {model.env!r}")
    if "gpus" in model.explicit:
        problems.add(f"{path}.gpus", "Ray assigns this model's GPUs on every node; remove gpus (limit what Ray may "
                     "use on a node with [[cluster.node]] gpus)")
    if model.world_size == 1:
        problems.warn(f"{path}.tensor_parallel", "one GPU needs no Ray: set tensor_parallel x pipeline_parallel to the "
                      "GPUs it spans, or use distributed_backend = \"mp\"")


def _check_node_gpus(stack: Stack, problems: Problems) -> None:
    """A GPU given to Ray on a node cannot also be pinned by a model or program of that node."""
    for index, node in enumerate(stack.cluster.nodes):
        if not node.gpus:
            continue
        entries = [(f"model[{m.index}].gpus", m.gpus) for m in stack.models if m.node == node.name] + \
                  [(f"program[{p.index}].gpus", p.gpus) for p in stack.programs if p.node == node.name]
        for field, gpus in entries:
            shared = sorted(set(gpus or ()) & set(node.gpus))
            if shared:
                problems.add(field, f"GPU {', '.join(map(str, shared))} of node {node.name!r} is given to Ray "
                             f"(cluster.node[{index}].gpus); a GPU has one owner")
