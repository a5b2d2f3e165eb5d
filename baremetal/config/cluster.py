"""The [cluster] section: the nodes of one stack file, Ray's pinned ports and security settings, and which
node this machine is. Choosing the node is a pure function of the request and the local addresses."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from baremetal.config import types as t
from baremetal.config.fields import Problems, Table
from baremetal.config.model import CLUSTER_ROLES, Cluster, ClusterNode, RayPorts
from baremetal.errors import ConfigError

NODE_ENV_VAR = "BAREMETAL_NODE"
DEFAULT_RAY_ENV = "ray"
RAY_VERSION = "2.60.0"               # the Ray the implied "ray" env installs (tested; every node must match)
DEFAULT_OBJECT_STORE = "2GiB"
# Ray's socket paths are <temp_dir>/session_<date>_<time>_<pid>/sockets/plasma_store: about 63 bytes after
# the temp dir, within the 107 bytes a unix socket path may have.
RAY_SOCKET_SUFFIX_BYTES = 63
UNIX_SOCKET_PATH_MAX = 107
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}\Z")


class NodeUnknownError(ConfigError):
    """A valid cluster stack file, but this machine is none of its nodes (or several): say which."""

    def __init__(self, file, issues, nodes: list[str]):
        super().__init__(file, issues)
        self.nodes = nodes


@dataclass(frozen=True)
class NodeChoice:
    """How this machine says which node it is: a name (from --node or $BAREMETAL_NODE) and/or its addresses.

    `local_addresses` is None when unknown (tests, a review machine); then only a name can choose.
    """

    name: str | None = None
    source: str = "--node"
    local_addresses: tuple[str, ...] | None = None


def node_choice(requested: str | None) -> NodeChoice:
    """The choice on this machine: `requested` (--node), else $BAREMETAL_NODE, with the local addresses."""
    if requested:
        return NodeChoice(requested, "--node", local_addresses())
    from_env = os.environ.get(NODE_ENV_VAR)
    if from_env:
        return NodeChoice(from_env, f"${NODE_ENV_VAR}", local_addresses())
    return NodeChoice(None, "", local_addresses())


def local_addresses() -> tuple[str, ...]:
    """Every IP address on this machine's interfaces (in its network namespace)."""
    import socket

    import psutil

    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.append(address.address.split("%", 1)[0])
    return tuple(sorted(set(found)))


def choose_node(nodes: tuple[ClusterNode, ...], choice: NodeChoice) -> tuple[str | None, str | None, str | None]:
    """(node name, error, warning): which node this machine is, by name if one was given, else by address."""
    listing = ", ".join(f"{n.name} ({n.address})" for n in nodes)
    if choice.name:
        if not any(n.name == choice.name for n in nodes):
            close = difflib.get_close_matches(choice.name, [n.name for n in nodes], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return None, f"{choice.source} names node {choice.name!r}, which is not in [[cluster.node]]{hint} " \
                         f"(nodes: {listing})", None
        node = next(n for n in nodes if n.name == choice.name)
        if choice.local_addresses is not None and node.address not in choice.local_addresses:
            return node.name, None, (f"node {node.name!r} has address {node.address}, which is not on this machine "
                                     f"(its addresses: {', '.join(choice.local_addresses) or 'none'}); its "
                                     "programs will fail to bind it: run this on that node, or fix its address")
        return node.name, None, None
    if choice.local_addresses is None:
        return None, ("which node is this machine? say it with --node NAME or $BAREMETAL_NODE "
                      f"(nodes: {listing})"), None
    matching = [n for n in nodes if n.address in choice.local_addresses]
    if len(matching) == 1:
        return matching[0].name, None, None
    if not matching:
        return None, (f"none of the cluster's addresses is on this machine (nodes: {listing}; this machine: "
                      f"{', '.join(choice.local_addresses) or 'none'}); run it on a cluster node, or say which "
                      f"node this is with --node NAME or ${NODE_ENV_VAR}"), None
    names = ", ".join(n.name for n in matching)
    return None, (f"this machine holds the addresses of several nodes ({names}); say which one it is with "
                  f"--node NAME or ${NODE_ENV_VAR}"), None


def read_cluster(raw: Any, problems: Problems, base: Path, stack_root: Path, choice: NodeChoice | None,
                 resolve: Callable[[str, Path | None], Path]) -> tuple[Cluster | None, list[str]]:
    """(the [cluster] table with this machine's node chosen, []), or (None, the node names when only the
    choice failed) with the issues recorded."""
    table = Table(raw, "cluster", problems)
    env = table.take("env", _name, None)
    token_file = table.take("token_file", t.nonempty_string, "ray-token")
    dashboard = table.take("dashboard", t.boolean, False)
    dashboard_host = table.take("dashboard_host", t.nonempty_string, "127.0.0.1")
    object_store = table.take("object_store_memory", t.size_bytes, t.size_bytes(DEFAULT_OBJECT_STORE))
    temp_dir = table.take("temp_dir", t.nonempty_string)
    lost_after_s = table.take("lost_after", t.duration_s, 6.0)
    execute_timeout_s = table.take("execute_model_timeout", t.duration_s, 60.0)
    ports = _read_ports(table.take("ports", lambda v: v, {}), problems)
    nodes = tuple(_read_node(i, item, problems, stack_root, resolve)
                  for i, item in enumerate(table.take("node", _array_of_tables, [])))
    table.finish()
    if lost_after_s < 4:
        problems.add("cluster.lost_after", "must be at least 4s: Ray checks a node every 2s at most, and one "
                     "slow answer from a busy node must not make it lost")
    if execute_timeout_s < 1:
        problems.add("cluster.execute_model_timeout", "must be at least 1s")
    if object_store < 78 * 2**20:
        problems.add("cluster.object_store_memory", "Ray needs at least 78MiB for its object store")
    if not _check_nodes(nodes, problems) or choice is None:
        return None, []
    local, error, warning = choose_node(nodes, choice)
    if error:
        problems.add("cluster", error)
        return None, [] if choice.name else [node.name for node in nodes]
    if warning:
        problems.warn("cluster", warning)
    local_root = next(n.root for n in nodes if n.name == local)
    temp = resolve(temp_dir, None) if temp_dir else local_root / "ray"
    if len(str(temp).encode()) + RAY_SOCKET_SUFFIX_BYTES > UNIX_SOCKET_PATH_MAX:
        problems.add("cluster.temp_dir", f"Ray's sockets under {temp} would pass the {UNIX_SOCKET_PATH_MAX}-byte "
                     f"limit of unix socket paths (it keeps about {RAY_SOCKET_SUFFIX_BYTES} bytes after it); "
                     f"set temp_dir to a path of at most {UNIX_SOCKET_PATH_MAX - RAY_SOCKET_SUFFIX_BYTES} bytes, "
                     'e.g. "/tmp/ray-<stack>"')
    return Cluster(nodes=nodes, local=local, env=env or "", token_file=resolve(token_file, None), ports=ports,
                   dashboard=dashboard, dashboard_host=dashboard_host, object_store_memory_bytes=object_store,
                   temp_dir=temp, lost_after_s=lost_after_s, execute_model_timeout_s=execute_timeout_s), []


def _read_node(index: int, raw: Any, problems: Problems, stack_root: Path,
               resolve: Callable[[str, Path | None], Path]) -> ClusterNode:
    path = f"cluster.node[{index}]"
    table = Table(raw, path, problems)
    name = table.take("name", _name, f"node-{index}", required=True)
    address = table.take("address", t.ip_address, "", required=True)
    role = table.take("role", t.choice(*CLUSTER_ROLES), "worker")
    root = table.take("root", t.nonempty_string)
    interface = table.take("interface", _interface)
    gpus = table.take("gpus", t.gpu_list)
    num_cpus = table.take("num_cpus", t.integer(0, 100000))
    table.finish()
    return ClusterNode(name=name, address=address, role=role, root=resolve(root, None) if root else stack_root,
                       interface=interface, gpus=gpus, num_cpus=num_cpus)


def _check_nodes(nodes: tuple[ClusterNode, ...], problems: Problems) -> bool:
    """One head, distinct names and addresses; False when no node can be chosen from them."""
    before = len(problems.issues)
    if not nodes:
        problems.add("cluster.node", 'list the nodes: [[cluster.node]] with name, address and role = "head" '
                     "for one of them")
        return False
    heads = [i for i, n in enumerate(nodes) if n.is_head]
    if len(heads) != 1:
        problems.add(f"cluster.node[{heads[1] if heads else 0}].role",
                     f"a cluster has exactly one head (role = \"head\"), this one has {len(heads)}")
    for field in ("name", "address"):
        seen: dict[str, int] = {}
        for index, node in enumerate(nodes):
            value = getattr(node, field)
            if value and value in seen:
                problems.add(f"cluster.node[{index}].{field}", f"{value!r} is already node[{seen[value]}]'s {field}")
            seen.setdefault(value, index)
    return len(problems.issues) == before


def _read_ports(raw: Any, problems: Problems) -> RayPorts:
    table = Table(raw, "cluster.ports", problems)
    defaults = RayPorts()
    values = {name: table.take(name, t.integer(1024, 65535), default) for name, default in defaults.named().items()}
    table.finish()
    ports = RayPorts(**values)
    if ports.max_worker <= ports.min_worker:
        problems.add("cluster.ports.max_worker", f"must be above min_worker ({ports.min_worker})")
    workers = range(ports.min_worker, ports.max_worker + 1)
    first: dict[int, str] = {}
    for name, port in ports.named().items():
        if name in ("min_worker", "max_worker"):
            continue
        if port in workers:
            problems.add(f"cluster.ports.{name}", f"port {port} is inside Ray's worker range "
                         f"{ports.min_worker}-{ports.max_worker}")
        elif port in first:
            problems.add(f"cluster.ports.{name}", f"port {port} is already cluster.ports.{first[port]}")
        first.setdefault(port, name)
    return ports


def ray_port_claims(cluster: Cluster) -> list[tuple[range, str]]:
    """The ports Ray takes on every node, as (range, field) for collision checks with the stack's ports."""
    ports = cluster.ports
    claims = [(range(port, port + 1), f"cluster.ports.{name}") for name, port in ports.named().items()
              if name not in ("min_worker", "max_worker") and (name != "dashboard" or cluster.dashboard)]
    claims.append((range(ports.min_worker, ports.max_worker + 1), "cluster.ports.min_worker..max_worker"))
    return claims


def _name(value: Any) -> str:
    text = t.string(value)
    if not _NAME.match(text):
        raise t.FieldError(f"{text!r}: names use letters, digits, '.', '_' and '-', and start with a letter or digit")
    return text


def _interface(value: Any) -> str:
    text = t.nonempty_string(value)
    if not _IFNAME.match(text):
        raise t.FieldError(f"{text!r} is not a network interface name (e.g. \"eth1\", \"ib0\")")
    return text


def _array_of_tables(value: Any) -> list:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise t.FieldError("expected an array of tables: write each node as [[cluster.node]]")
    return value
