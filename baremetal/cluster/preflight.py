"""`baremetal cluster check`: can this node join its cluster? Each check says what it found and what to do."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass

from baremetal.cluster.token import token_problem
from baremetal.config.cluster import local_addresses
from baremetal.config.model import Stack

CONNECT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Finding:
    """One check: what, whether it passed, and what was found or what to do."""

    what: str
    ok: bool
    detail: str


def preflight(stack: Stack, with_env: bool = True) -> list[Finding]:
    """Every check for the local node of `stack`'s cluster (`with_env`: also run the Ray env, which
    `baremetal doctor` checks its own way)."""
    cluster = stack.cluster
    assert cluster is not None
    node = cluster.local_node
    findings = []
    mine = local_addresses()
    findings.append(Finding("address", node.address in mine,
                            f"{node.address} is on this machine" if node.address in mine else
                            f"{node.address} is not on this machine ({', '.join(mine)}): is this node {node.name}?"))
    problem = token_problem(cluster.token_file)
    findings.append(Finding("token", problem is None, problem or f"{cluster.token_file} (mode 0600)"))
    if with_env:
        findings.append(_ray_env(stack))
    if not node.is_head:
        findings.append(_reach(cluster.head.address, cluster.ports.gcs, "head"))
    findings.append(_shm(cluster.object_store_memory_bytes))
    return findings


def _ray_env(stack: Stack) -> Finding:
    env = stack.envs[stack.cluster.env]
    try:
        result = subprocess.run([env.interpreter, "-c", "import ray, sys; print(ray.__version__, sys.version.split()[0])"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return Finding("ray env", False, f"env {env.name!r} ({env.interpreter}) cannot run: {error}; "
                       "`baremetal install` builds it")
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return Finding("ray env", False, f"env {env.name!r} ({env.interpreter}) has no working ray: {last}; "
                       "`baremetal install` builds it")
    ray_version, python_version = result.stdout.split()
    return Finding("ray env", True, f"env {env.name!r}: ray {ray_version} on Python {python_version} "
                   "(every node must run the same two)")


def _reach(address: str, port: int, what: str) -> Finding:
    try:
        with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        return Finding(f"{what} reachable", False, f"{address}:{port} does not answer ({error.strerror or error}): is "
                       f"Ray up on the {what} (`baremetal up` there), and the port open in its firewall?")
    return Finding(f"{what} reachable", True, f"{address}:{port} answers")


def _shm(object_store_bytes: int) -> Finding:
    try:
        info = os.statvfs("/dev/shm")
    except OSError:
        return Finding("/dev/shm", True, "not found: Ray keeps its object store on disk (slower)")
    size = info.f_frsize * info.f_blocks
    if size < object_store_bytes:
        return Finding("/dev/shm", True, f"{size / 2**30:.1f} GiB, smaller than the object store "
                       f"({object_store_bytes / 2**30:.1f} GiB): Ray falls back to disk; enlarge /dev/shm or lower "
                       "object_store_memory")
    return Finding("/dev/shm", True, f"{size / 2**30:.1f} GiB")
