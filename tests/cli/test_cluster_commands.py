"""`baremetal cluster ...`, `--node`, and `validate`/`render`/`status` of a cluster stack, as an operator runs them."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from click.testing import CliRunner

from baremetal.cli import cli
from tests.support.engine_envs import ensure_env

CLUSTER = '''
[stack]
name = "c"
root = "{root}"
[api]
kind = "none"
[watchdog]
enabled = false
[env.ray]
kind = "system"
python = "{python}"
[cluster]
env = "ray"
[[cluster.node]]
name = "head"
address = "10.99.0.1"
role = "head"
[[cluster.node]]
name = "w1"
address = "10.99.0.2"
root = "{root}/w1"
[[model]]
name = "fc"
path = "/m/fc"
engine = "fastchat"
node = "w1"
env = "ray"
'''


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def cluster_file(write_stack, short_tmp):
    return write_stack(CLUSTER.format(root=short_tmp / "h", python="/usr/bin/python3"))


def test_token_is_private_never_printed_and_kept(cluster_file):
    first = run("cluster", "token", "-c", str(cluster_file), "--node", "head")
    token_path = cluster_file.parent / "ray-token"
    token = token_path.read_text()
    assert first.exit_code == 0 and len(token) == 64 and token not in first.output
    assert stat.S_IMODE(os.stat(token_path).st_mode) == 0o600
    again = run("--node", "head", "cluster", "token", "-c", str(cluster_file))
    assert again.exit_code == 0 and "kept it" in again.output and token_path.read_text() == token
    forced = run("--node", "head", "cluster", "token", "--force", "-c", str(cluster_file))
    assert forced.exit_code == 0 and token_path.read_text() != token


def test_cluster_commands_need_a_cluster(write_stack):
    single = write_stack('[stack]\nname = "one"\n')
    result = run("cluster", "token", "-c", str(single))
    assert result.exit_code == 2 and "has no [cluster] section" in result.output


def test_node_must_be_known(cluster_file):
    result = run("--node", "w11", "render", "-c", str(cluster_file))
    assert result.exit_code == 2
    assert "--node names node 'w11', which is not in [[cluster.node]]; did you mean 'w1'?" in result.output
    from_env = run("render", "-c", str(cluster_file), env={"BAREMETAL_NODE": "nope"})
    assert from_env.exit_code == 2 and "$BAREMETAL_NODE names node 'nope'" in from_env.output


def test_render_for_a_node(cluster_file, short_tmp):
    out = short_tmp / "review"
    result = run("--node", "w1", "render", "--out", str(out), "-c", str(cluster_file))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "conf.d").iterdir()) == ["fastchat-fc.conf", "ray-worker.conf"]
    assert "not on this machine" in result.output          # a warning: this is a review machine


def test_validate_away_from_the_nodes_checks_every_node(cluster_file):
    result = run("validate", "--json", "-c", str(cluster_file))
    assert result.exit_code == 0, result.output
    nodes = json.loads(result.stdout)["nodes"]
    assert [(n["node"], [p["name"] for p in n["programs"]]) for n in nodes] == [
        ("head", ["ray-head", "ray-monitor", "controller"]), ("w1", ["ray-worker", "fastchat-fc"])]


def test_status_on_a_worker_points_to_the_head(cluster_file):
    result = run("--node", "w1", "cluster", "status", "-c", str(cluster_file))
    assert result.exit_code == 2 and "the cluster is watched from the head (head, 10.99.0.1)" in result.output


def test_status_without_a_monitor_report_is_not_healthy(cluster_file):
    result = run("--node", "head", "cluster", "status", "--json", "-c", str(cluster_file))
    assert result.exit_code == 1
    view = json.loads(result.stdout)
    assert [n["state"] for n in view["nodes"]] == ["unknown", "unknown"]
    assert view["nodes"][1]["programs"] == ["fastchat-fc"] and not view["remote_programs"][0]["ready"]
    table = run("--node", "head", "cluster", "status", "-c", str(cluster_file)).output
    assert "0/2 node(s) alive; no report from ray-monitor yet" in table


@pytest.mark.e2e   # the real Ray env
def test_check_names_what_keeps_a_node_out(write_stack, short_tmp):
    python = ensure_env("ray") / "bin" / "python"
    config = write_stack(CLUSTER.format(root=short_tmp / "h", python=python))
    run("--node", "head", "cluster", "token", "-c", str(config))
    (config.parent / "ray-token").chmod(0o644)
    result = run("--node", "head", "cluster", "check", "--json", "-c", str(config))
    assert result.exit_code == 1
    checks = {c["what"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["address"]["ok"] and "10.99.0.1 is not on this machine" in checks["address"]["detail"]
    assert not checks["token"]["ok"] and "readable by others (mode 0644)" in checks["token"]["detail"]
    assert checks["ray env"]["ok"] and "ray 2.60.0 on Python 3." in checks["ray env"]["detail"]


def test_clean_shm_removes_only_stale_unused_segments(cluster_file, short_tmp):
    tmp = short_tmp / "h" / "tmp"
    tmp.mkdir(parents=True)
    stale, fresh = tmp / "vllm_dist_0123", tmp / "vllm_dist_4567"
    for path in (stale, fresh):
        path.write_bytes(b"x" * 100)
    os.utime(stale, (time.time() - 600,) * 2)
    dry = run("--node", "head", "cluster", "clean-shm", "--dry-run", "-c", str(cluster_file))
    assert dry.exit_code == 0 and f"would remove {stale} (100 bytes)" in dry.output and stale.exists()
    real = run("--node", "head", "cluster", "clean-shm", "-c", str(cluster_file))
    assert real.exit_code == 0 and f"removed {stale}" in real.output
    assert not stale.exists() and fresh.exists()


def test_doctor_runs_the_node_checks(cluster_file):
    from baremetal.config import load_stack
    from baremetal.doctor.gather import cluster_checks

    run("--node", "w1", "cluster", "token", "-c", str(cluster_file))
    checks = {check.name: check for check in cluster_checks(load_stack(cluster_file, node="w1"))}
    assert set(checks) == {"cluster address", "cluster token", "cluster head reachable", "cluster /dev/shm"}
    assert checks["cluster token"].status == "ok"
    assert checks["cluster address"].status == "fail" and checks["cluster address"].fix == "see `baremetal cluster check`"
