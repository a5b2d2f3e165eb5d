"""A small real cluster for tests and the cluster bench: hosts as network namespaces (support/netns.py), one
stack file with a [cluster] of them, and on each host its own supervisord started by `baremetal up`, as an
operator would on separate machines. Torn down by `baremetal down` on each host, then the hosts are
removed (whatever still runs in them is killed), also when a test failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from baremetal.cluster.members import NodeState, node_states, read_membership
from baremetal.config import load_stack
from baremetal.config.model import Stack
from baremetal.supervisord.client import SupervisorClient
from tests.support import netns
from tests.support.waiting import wait_for

RAY_DRIVER = Path(__file__).resolve().parent / "servers" / "ray_driver.py"


@dataclass
class ClusterRun:
    """A running cluster: the hosts, the shared stack file, and each node's stack as loaded on it."""

    network: netns.Network
    folder: Path
    stack_file: Path
    stacks: dict[str, Stack] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)        # what a fixture wants its tests to know

    def host(self, name: str) -> netns.Host:
        return self.network.host(name)

    def baremetal(self, host: str, *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess:
        """`baremetal -c STACK ARGS` on `host`, which finds out by itself which node it is."""
        environment = {key: value for key, value in os.environ.items() if key != "BAREMETAL_NODE"}
        return self.host(host).run([sys.executable, "-m", "baremetal", "-c", str(self.stack_file), *args],
                                   timeout_s=timeout_s, env=environment)

    def up(self, node: str, *args: str) -> subprocess.CompletedProcess:
        """`baremetal up --no-wait` on `node`, as its operator would; fails the test if it fails."""
        result = self.baremetal(node, "up", "--no-wait", *args)
        assert result.returncode == 0, f"up on {node}: {result.stdout}\n{result.stderr}"
        return result

    def supervisor(self, node: str) -> SupervisorClient:
        return SupervisorClient(self.stacks[node].socket_path)

    def states(self) -> dict[str, NodeState]:
        """Every node as the head's ray-monitor last reported it."""
        head = self.stacks[self.head]
        membership = read_membership(head.root / "run" / "cluster.json")
        return {state.name: state for state in node_states(head.cluster, membership, time.time())}

    def incarnation_dead(self, node_id: str) -> bool:
        """Whether the head's ray-monitor reports Ray node `node_id` dead (a node that rejoins gets a new id)."""
        membership = read_membership(self.stacks[self.head].root / "run" / "cluster.json")
        return any(node.node_id == node_id and not node.alive for node in (membership.nodes if membership else ()))

    def events(self, node: str, kind: str | None = None, program: str | None = None) -> list[dict]:
        """The events (of `kind`, for `program`) in `node`'s watchdog event log, oldest first."""
        from baremetal.watchdog.events import events_path, read_events

        return [event for event in read_events(events_path(self.stacks[node].root))
                if kind in (None, event.get("kind")) and program in (None, event.get("program"))]

    def watchdog_entry(self, node: str, program: str) -> dict:
        """`program`'s entry in `node`'s watchdog state file ({} when there is none yet)."""
        from baremetal.watchdog.state_file import read_state

        return ((read_state(self.stacks[node].watchdog_state_path) or {}).get("programs") or {}).get(program) or {}

    @property
    def head(self) -> str:
        return next(name for name, stack in self.stacks.items() if stack.is_head)

    def wait_states(self, expected: dict[str, str], timeout_s: float) -> float:
        """Seconds until every named node has its expected state (alive, lost, ...)."""
        started = time.monotonic()
        wait_for(lambda: all(self.states()[name].state == state for name, state in expected.items()),
                       timeout_s, 0.1, f"nodes {expected} (last seen: "
                       f"{ {n: s.state for n, s in self.states().items()} })")
        return time.monotonic() - started

    def ray_starts(self, node: str) -> int:
        """How many times `ray start` on `node` finished starting (it then blocks, watching its processes)."""
        program = "ray-head" if node == self.head else "ray-worker"
        path = self.stacks[node].logs_dir / f"{program}.log"
        return path.read_text(errors="replace").count("Ray runtime started") if path.exists() else 0

    def wait_ray_started(self, node: str, more_than: int, timeout_s: float = 90) -> None:
        """Wait until `ray start` on `node` has finished starting once more: a node lost while its `ray start`
        is still starting up comes back only when that start-up times out (30 s), which tests avoid."""
        wait_for(lambda: self.ray_starts(node) > more_than, timeout_s, 0.2, f"ray start on {node} finished")

    def get(self, host: str, url: str, timeout_s: float = 5) -> tuple[int, str]:
        """(status, body) of a GET from inside `host` (0 when nothing answers)."""
        script = ("import sys, urllib.request, urllib.error\n"
                  "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])); print(r.status); "
                  "print(r.read().decode())\n"
                  "except urllib.error.HTTPError as e: print(e.code); print(e.read().decode())\n"
                  "except Exception as e: print(0); print(repr(e))\n")
        result = self.host(host).run([sys.executable, "-c", script, url, str(timeout_s)], timeout_s=timeout_s + 30)
        code, _, body = result.stdout.partition("\n")
        return int(code or 0), body.strip()


def cluster_toml(folder: Path, network: netns.Network, ray_python: str, extra: str = "",
                 api: str = 'kind = "none"') -> str:
    """Two nodes (head, w1), each with its own root under `folder` and one logical GPU for Ray."""
    head, worker = network.host("head"), network.host("w1")
    return textwrap.dedent(f'''
        [stack]
        name = "clu"
        root = "{folder}/h"
        [env.ray]
        kind = "system"
        python = "{ray_python}"
        [api]
        {api}
        [watchdog]
        [cluster]
        env = "ray"
        object_store_memory = "100MiB"
        [[cluster.node]]
        name = "head"
        address = "{head.address}"
        role = "head"
        gpus = [0]
        num_cpus = 2
        [[cluster.node]]
        name = "w1"
        address = "{worker.address}"
        root = "{folder}/w"
        gpus = [0]
        num_cpus = 2
    ''') + textwrap.dedent(extra)


def start_cluster(network: netns.Network, ray_python: str, extra: str = "",
                  nodes: tuple[str, ...] = ("head", "w1"), api: str = 'kind = "none"') -> ClusterRun:
    """Write the stack file and token, then `baremetal up --no-wait` on `nodes` (the others: `run.up`)."""
    folder = Path(tempfile.mkdtemp(prefix="bmc-", dir="/tmp"))
    stack_file = folder / "stack.toml"
    stack_file.write_text(cluster_toml(folder, network, ray_python, extra, api))
    run = ClusterRun(network, folder, stack_file)
    run.stacks = {name: load_stack(stack_file, node=name) for name in ("head", "w1")}
    made = run.baremetal("head", "cluster", "token")
    assert made.returncode == 0, made.stderr
    for node in nodes:
        run.up(node)
    return run


def stop_cluster(run: ClusterRun) -> None:
    """`baremetal down` on every host (the worker first), then remove the roots."""
    for node in ("w1", "head"):
        try:
            run.baremetal(node, "down", timeout_s=120)
        except subprocess.TimeoutExpired:
            pass
    shutil.rmtree(run.folder, ignore_errors=True)


def log_of(run: ClusterRun, node: str, program: str) -> str:
    """A program's two log files on `node`, for assertion messages."""
    logs = run.stacks[node].logs_dir
    return "\n".join(path.read_text(errors="replace")[-3000:] for path in
                     (logs / f"{program}.log", logs / f"{program}.err.log") if path.exists())


def json_of(result: subprocess.CompletedProcess) -> dict:
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)
