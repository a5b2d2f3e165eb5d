"""Ray's command lines and environment for one node of a cluster. Pure: the Cluster in, argv and variables out.

Facts these follow (measured with ray 2.60):
- `ray start --block` keeps Ray in the foreground, so supervisord owns it; SIGTERM stops the node and all
  its processes in ~3 s, SIGKILL of that process takes its raylet down within seconds too. `ray stop`
  kills every Ray process on the machine, whoever started it: baremetal never runs it.
- Token auth: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<file> on every node and every driver; a node
  without the token, or with another one, is refused ("InvalidAuthToken").
- The minimal `ray` package refuses --ray-client-server-port (it needs ray[client]) and then starts no
  client server; with ray[client] installed the head starts one on 10001 unless told another port.
- Inside a network namespace, or on a machine with several NICs, Ray needs --node-ip-address.
- The GCS declares a silent node dead after RAY_health_check_failure_threshold checks of
  RAY_health_check_period_ms, each waiting RAY_health_check_timeout_ms: 1 s / 1 s / 3 found a frozen or
  unplugged node in 5.4-7.3 s, a killed one (connection refused) in 3 s; Ray's defaults took 13 s.
"""

from __future__ import annotations

import math

from baremetal.config.model import Cluster, ClusterNode

RAY_MODULE = "ray.scripts.scripts"           # what the `ray` console script runs; works for every env kind
HEALTH_CHECK_PERIOD_MS = 1000
HEALTH_CHECK_TIMEOUT_MS = 1000


def auth_environment(cluster: Cluster) -> dict[str, str]:
    """Token authentication for every Ray process and driver; the token stays in its file."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster.token_file),
            "RAY_USAGE_STATS_ENABLED": "0"}


def network_environment(node: ClusterNode) -> dict[str, str]:
    """The address and NIC that vLLM, gloo and NCCL use on `node` (Ray's workers inherit them from the raylet)."""
    environment = {"VLLM_HOST_IP": node.address}
    if node.interface:
        environment |= {"GLOO_SOCKET_IFNAME": node.interface, "NCCL_SOCKET_IFNAME": node.interface,
                        "TP_SOCKET_IFNAME": node.interface}
    return environment


def health_check_environment(cluster: Cluster) -> dict[str, str]:
    """How fast the GCS (on the head) declares a silent node dead: about `lost_after` seconds.

    A silent node fails one check every period + timeout (2 s), the first about 3 s after it went
    silent: measured, 3 failures took 7.3 s, so `threshold` failures take about 2 x threshold + 1 s.
    At least 2 failures, so that one slow answer from a busy node does not kill it.
    """
    per_check_s = (HEALTH_CHECK_PERIOD_MS + HEALTH_CHECK_TIMEOUT_MS) / 1000
    threshold = max(2, math.floor((cluster.lost_after_s - 1) / per_check_s))
    return {"RAY_health_check_period_ms": str(HEALTH_CHECK_PERIOD_MS),
            "RAY_health_check_timeout_ms": str(HEALTH_CHECK_TIMEOUT_MS),
            "RAY_health_check_failure_threshold": str(threshold)}


def node_environment(cluster: Cluster) -> dict[str, str]:
    """Variables of the local node's `ray start` program."""
    node = cluster.local_node
    environment = auth_environment(cluster) | network_environment(node)
    if node.is_head:
        environment |= health_check_environment(cluster)
    if node.gpus is not None:
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in node.gpus)
    return environment


def node_argv(cluster: Cluster, python: str, client_server: bool) -> list[str]:
    """`ray start --block` for the local node, every port pinned; `client_server`: ray[client] is installed."""
    node, ports = cluster.local_node, cluster.ports
    argv = [python, "-m", RAY_MODULE, "start", "--block"]
    if node.is_head:
        argv += ["--head", "--port", str(ports.gcs), "--include-dashboard", "true" if cluster.dashboard else "false"]
        if cluster.dashboard:
            argv += ["--dashboard-host", cluster.dashboard_host, "--dashboard-port", str(ports.dashboard)]
        if client_server:
            argv += ["--ray-client-server-port", str(ports.client_server)]
    else:
        argv += ["--address", cluster.gcs_address]
    argv += ["--node-ip-address", node.address,
             "--node-manager-port", str(ports.node_manager), "--object-manager-port", str(ports.object_manager),
             "--runtime-env-agent-port", str(ports.runtime_env_agent),
             "--dashboard-agent-grpc-port", str(ports.dashboard_agent_grpc),
             "--dashboard-agent-listen-port", str(ports.dashboard_agent_http),
             "--metrics-export-port", str(ports.metrics_export),
             "--min-worker-port", str(ports.min_worker), "--max-worker-port", str(ports.max_worker),
             "--object-store-memory", str(cluster.object_store_memory_bytes),
             "--temp-dir", str(cluster.temp_dir), "--disable-usage-stats"]
    if node.gpus is not None:
        argv += ["--num-gpus", str(len(node.gpus))]
    if node.num_cpus is not None:
        argv += ["--num-cpus", str(node.num_cpus)]
    return argv


def driver_environment(cluster: Cluster) -> dict[str, str]:
    """Variables of a program that drives the cluster from the head (a vLLM server on Ray's executor).

    vLLM copies the driver's NCCL_* variables to its Ray workers on every node, overriding what each raylet
    has, so the driver's NCCL_SOCKET_IFNAME lists the interfaces of all nodes (NCCL takes a list of prefixes).
    """
    environment = auth_environment(cluster) | network_environment(cluster.local_node) | {
        "RAY_ADDRESS": cluster.gcs_address,
        "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": str(max(1, round(cluster.execute_model_timeout_s))),
    }
    interfaces = list(dict.fromkeys(n.interface for n in cluster.nodes if n.interface))
    if interfaces:
        environment["NCCL_SOCKET_IFNAME"] = ",".join(interfaces)
    return environment
