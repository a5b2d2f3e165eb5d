"""The cluster's part of the plan: each node's Ray program, the head's ray-monitor, models on Ray started
through the launcher, and the probes the head runs against models on other nodes. Pure."""

from __future__ import annotations

import dataclasses
from typing import Mapping

from baremetal.engines import ray
from baremetal.config.cluster import NODE_ENV_VAR
from baremetal.config.model import FASTCHAT_ENGINES, Stack, frozen_mapping
from baremetal.launchers import launcher_path
from baremetal.plan.spec import Probe, ProgramSpec

MONITOR_SHIM = launcher_path("ray_monitor")
# Ray comes up before anything that may use it, and its monitor right after it.
RAY_PRIORITY = 50
MONITOR_PRIORITY = 60
# FastChat's defaults (a heartbeat every 45 s, dropped after 90 s) leave a worker that lost the head for a
# while out of the controller for up to 45 s after the network is back; across nodes, beat more often.
FASTCHAT_HEARTBEAT = {"FASTCHAT_WORKER_HEART_BEAT_INTERVAL": "10", "FASTCHAT_CONTROLLER_HEART_BEAT_EXPIRATION": "30"}


def node_environment(stack: Stack) -> dict[str, str]:
    """Variables every program of a cluster node gets: which node it is (baremetal commands run by
    supervisord load the stack for that node) and FastChat's faster heartbeats."""
    if stack.cluster is None:
        return {}
    environment = {NODE_ENV_VAR: stack.cluster.local}
    if stack.uses_fastchat():
        environment |= FASTCHAT_HEARTBEAT
    return environment


def cluster_specs(stack: Stack, ray_client: bool, base: Mapping[str, str]) -> list[ProgramSpec]:
    """ray-head or ray-worker for this node, and on the head the ray-monitor."""
    cluster = stack.cluster
    assert cluster is not None
    node = cluster.local_node
    python = stack.envs[cluster.env].interpreter
    name = "ray-head" if node.is_head else "ray-worker"
    port = cluster.ports.gcs if node.is_head else cluster.ports.node_manager
    # `ray start --block` exits when its node fails (e.g. a head restarted, a port still held by the
    # last run's agents for a few seconds): supervisord starts it again, many times if need be.
    specs = [ProgramSpec(name=name, role="ray", argv=tuple(ray.node_argv(cluster, python, ray_client)),
                         environment=frozen_mapping(dict(base) | ray.node_environment(cluster)),
                         priority=RAY_PRIORITY, gpus=node.gpus, host=node.address, port=port,
                         startsecs=5, startretries=20, stopwaitsecs=30, engine="ray",
                         notes=(f"Ray node {node.name} ({node.role}) of the cluster at {cluster.gcs_address}",))]
    if node.is_head:
        argv = (python, str(MONITOR_SHIM), "--address", cluster.gcs_address, "--out", str(stack.membership_path))
        environment = dict(base) | ray.auth_environment(cluster) | {
            "RAY_gcs_rpc_server_connect_timeout_s": "2", "RAY_py_gcs_connect_timeout_s": "2"}
        specs.append(ProgramSpec(name="ray-monitor", role="ray", argv=argv, environment=frozen_mapping(environment),
                                 priority=MONITOR_PRIORITY, startsecs=2, startretries=20, stopwaitsecs=5,
                                 engine="ray", notes=(f"writes {stack.membership_path} for the watchdog and status",)))
    return specs


def launched_on_ray(spec: ProgramSpec, stack: Stack, gpus: int, baremetal_python: str) -> ProgramSpec:
    """`spec` started through the launcher: stale segments cleaned, then the cluster awaited for `gpus`."""
    cluster = stack.cluster
    assert cluster is not None
    launcher = [baremetal_python, "-m", "baremetal.cluster.launch",
                "--ray-python", stack.envs[cluster.env].interpreter, "--gpus", str(gpus),
                "--clean", "/dev/shm", "--clean", str(stack.root / "tmp"), "--"]
    environment = dict(spec.environment) | ray.driver_environment(cluster)
    return dataclasses.replace(spec, argv=tuple(launcher) + tuple(spec.argv), environment=frozen_mapping(environment),
                               startretries=max(spec.startretries, 5),
                               notes=spec.notes + (f"starts once Ray has {gpus} GPU(s) free; restarted when a GPU "
                                                   "node is lost",))


def remote_probes(stack: Stack) -> dict[str, Probe]:
    """PROGRAM -> Probe for the models on other nodes: the head probes them to route around the unreachable."""
    if stack.cluster is None or not stack.is_head:
        return {}
    probes = {}
    for model in stack.models:
        if model.node == stack.cluster.local:
            continue
        kind = "fastchat-worker" if model.engine in FASTCHAT_ENGINES else "vllm"
        probes[model.program] = Probe(kind, model.url, model.name, model.task)
    for program in stack.programs:
        if program.node != stack.cluster.local and program.health:
            probes[program.name] = Probe("http", program.health)
    return probes
