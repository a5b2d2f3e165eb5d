"""What each node of a cluster renders: golden files for a three-node stack (a model spanning two nodes on
Ray, models on a third), the Ray command lines and variables, and the order programs start in."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from baremetal.engines import ray
from baremetal.config import parse_stack
from baremetal.engines.versions import VllmBuild
from baremetal.plan.plan import plan
from baremetal.plan.render import render
from baremetal.plan.spec import HostFacts
from baremetal.plan.templates import PACKAGE_DIR
from baremetal.plan.write import prepare_root, write_rendered

DATA = Path(__file__).parent.parent / "data"
GOLDEN = Path(__file__).parent.parent / "golden" / "cluster"
UPDATE = os.environ.get("BAREMETAL_UPDATE_GOLDEN") == "1"
FACTS = HostFacts(baremetal_python="/opt/baremetal/bin/python",
                  vllm_builds={"default": VllmBuild("vllm", (0, 33, 0), "pinned"),
                               "fastchat": VllmBuild("vllm", (0, 33, 0), "pinned")})


def stack_for(node: str, text: str | None = None):
    return parse_stack(text or (DATA / "cluster.toml").read_text(), Path("/srv/node/cluster.toml"), node)


def files_for(node: str, facts: HostFacts = FACTS) -> dict[str, str]:
    stack = stack_for(node)
    # The shims live in the installed package: name them the same wherever the tests run.
    return {f.path: f.content.replace(str(PACKAGE_DIR), "<baremetal>") for f in render(stack, plan(stack, facts), facts)}


def command(files: dict[str, str], program: str) -> list[str]:
    line = next(l for l in files[f"conf.d/{program}.conf"].splitlines() if l.startswith("command="))
    return shlex.split(line[len("command="):].replace("%%", "%"))


def environment(files: dict[str, str], program: str) -> dict[str, str]:
    line = next(l for l in files[f"conf.d/{program}.conf"].splitlines() if l.startswith("environment="))
    return dict(re.findall(r'(\w+)="([^"]*)"', line))


@pytest.mark.parametrize("node,programs", [
    # The head runs the controller that gpu3's FastChat worker registers with, and the one API.
    ("gpu1", ["ray-head", "ray-monitor", "controller", "vllm-gpt-4", "api", "watchdog"]),
    ("gpu2", ["ray-worker", "watchdog"]),
    ("gpu3", ["ray-worker", "fastchat-gte-large-zh", "vllm-bge-reranker-base", "watchdog"]),
])
def test_each_node_renders_its_own_programs(node, programs):
    names = [spec.name for spec in plan(stack_for(node), FACTS)]
    assert names == programs                 # in start order: Ray first, the watchdog last


@pytest.mark.parametrize("node,program", [
    ("gpu1", "ray-head"), ("gpu1", "ray-monitor"), ("gpu1", "vllm-gpt-4"), ("gpu1", "api"),
    ("gpu2", "ray-worker"), ("gpu3", "ray-worker"), ("gpu3", "fastchat-gte-large-zh"),
    ("gpu3", "vllm-bge-reranker-base"),
])
def test_golden_program_files(node, program):
    content = files_for(node)[f"conf.d/{program}.conf"]
    golden = GOLDEN / f"{node}.{program}.conf"
    if UPDATE:
        golden.write_text(content)
    assert content == golden.read_text(), "rendering changed; if intended, rerun with BAREMETAL_UPDATE_GOLDEN=1"


def test_ray_head_and_worker_pin_every_port_and_keep_the_token_in_its_file():
    head, worker = command(files_for("gpu1"), "ray-head"), command(files_for("gpu2"), "ray-worker")
    for argv in (head, worker):
        assert argv[1:6] == ["-m", "ray.scripts.scripts", "start", "--block", "--head" if argv is head else "--address"]
        flags = dict(zip(argv[5::1], argv[6::1]))
        for flag, value in (("--node-manager-port", "6800"), ("--object-manager-port", "6801"),
                            ("--runtime-env-agent-port", "6802"), ("--dashboard-agent-grpc-port", "6803"),
                            ("--metrics-export-port", "6804"), ("--dashboard-agent-listen-port", "52365"),
                            ("--min-worker-port", "10002"), ("--max-worker-port", "10999"),
                            ("--object-store-memory", str(4 * 2**30))):
            assert flags[flag] == value
        assert "--disable-usage-stats" in argv and not any("token" in part.lower() for part in argv)
    assert dict(zip(head, head[1:]))["--include-dashboard"] == "false" and "--ray-client-server-port" not in head
    assert dict(zip(worker, worker[1:]))["--address"] == "10.10.0.1:6379"
    assert dict(zip(worker, worker[1:]))["--node-ip-address"] == "10.10.0.2"
    env = environment(files_for("gpu1"), "ray-head")
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == "/etc/baremetal/ray-token"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0" and env["NCCL_SOCKET_IFNAME"] == "eth1"
    assert env["RAY_health_check_failure_threshold"] == "2"
    assert "RAY_health_check_period_ms" not in environment(files_for("gpu2"), "ray-worker")   # the GCS reads it


def test_client_server_port_only_when_ray_client_is_installed():
    facts = HostFacts(FACTS.baremetal_python, FACTS.vllm_builds, ray_client=True)
    argv = command(files_for("gpu1", facts), "ray-head")
    assert dict(zip(argv, argv[1:]))["--ray-client-server-port"] == "10001"


def test_node_without_gpus_for_ray():
    argv = command(files_for("gpu3"), "ray-worker")
    assert dict(zip(argv, argv[1:]))["--num-gpus"] == "0"
    assert environment(files_for("gpu3"), "ray-worker")["CUDA_VISIBLE_DEVICES"] == ""


def test_spanning_model_waits_for_the_cluster_then_runs_vllm_on_ray():
    argv = command(files_for("gpu1"), "vllm-gpt-4")
    split = argv.index("--")
    assert argv[:3] == ["/opt/baremetal/bin/python", "-m", "baremetal.cluster.launch"]
    launcher = dict(zip(argv[3:split:2], argv[4:split:2]))
    assert launcher["--gpus"] == "16" and launcher["--ray-python"] == "/data/baremetal/envs/default/bin/python"
    vllm = " ".join(argv[split + 1:])
    assert vllm.startswith("/data/baremetal/envs/default/bin/python -m vllm.entrypoints.cli.main serve")
    for expected in ("--tensor-parallel-size 8", "--pipeline-parallel-size 2", "--distributed-executor-backend ray"):
        assert expected in vllm
    env = environment(files_for("gpu1"), "vllm-gpt-4")
    assert env["RAY_ADDRESS"] == "10.10.0.1:6379" and env["VLLM_HOST_IP"] == "10.10.0.1"
    assert env["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] == "60" and env["GLOO_SOCKET_IFNAME"] == "eth1"
    assert env["NCCL_SOCKET_IFNAME"] == "eth1,ens5"      # vLLM copies it to every node's workers
    assert "CUDA_VISIBLE_DEVICES" not in env               # Ray assigns the GPUs on every node


def test_remote_models_bind_their_node_and_register_with_the_head():
    files = files_for("gpu3")
    worker = command(files, "fastchat-gte-large-zh")
    flags = dict(zip(worker, worker[1:]))
    assert flags["--host"] == "10.10.0.3" and flags["--worker-address"] == "http://10.10.0.3:21002"
    assert flags["--controller-address"] == "http://10.10.0.1:21001"
    assert environment(files, "fastchat-gte-large-zh")["FASTCHAT_WORKER_HEART_BEAT_INTERVAL"] == "10"
    rerank = command(files, "vllm-bge-reranker-base")
    assert dict(zip(rerank, rerank[1:]))["--host"] == "10.10.0.3"
    assert environment(files, "vllm-bge-reranker-base")["CUDA_VISIBLE_DEVICES"] == "1"
    # Every program knows which node it runs on: baremetal commands under supervisord load that node.
    assert environment(files, "watchdog")["BAREMETAL_NODE"] == "gpu3"
    assert stack_for("gpu3").root == Path("/srv/baremetal") and "/srv/baremetal/logs/" in files["conf.d/watchdog.conf"]


def test_rendered_files_read_back_with_supervisors_parser(short_tmp):
    text = (DATA / "cluster.toml").read_text().replace("/data/baremetal", str(short_tmp / "a")) \
        .replace("/srv/baremetal", str(short_tmp / "b"))
    for node in ("gpu1", "gpu2", "gpu3"):
        stack = stack_for(node, text)
        prepare_root(stack.root)
        write_rendered(render(stack, plan(stack, FACTS), FACTS), stack.supervisor_dir)
        options = ServerOptions()
        options.realize(["-c", str(stack.supervisord_conf)])
        programs = {group.name: group.process_configs[0] for group in options.process_group_configs}
        assert set(programs) == {spec.name for spec in plan(stack, FACTS)}
        ray_program = programs["ray-head" if node == "gpu1" else "ray-worker"]
        assert ray_program.environment["RAY_AUTH_TOKEN_PATH"] == "/etc/baremetal/ray-token"
        assert ray_program.command.split()[3:5] == ["start", "--block"]


@pytest.mark.parametrize("lost_after_s,threshold", [(4, 2), (6, 2), (7, 3), (10, 4), (30, 14)])
def test_health_check_threshold_follows_lost_after(lost_after_s, threshold):
    import dataclasses

    cluster = dataclasses.replace(stack_for("gpu1").cluster, lost_after_s=lost_after_s)
    assert ray.health_check_environment(cluster)["RAY_health_check_failure_threshold"] == str(threshold)
