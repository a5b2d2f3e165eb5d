"""doctor against real ports, real interpreters, real supervisord; NVML through the recording fake."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import psutil
import pytest
from click.testing import CliRunner

from baremetal.cli import cli
from baremetal.config import load_stack
from baremetal.doctor.gather import run_doctor
from baremetal.install.runner import SubprocessRunner
from baremetal.plan.pipeline import generate, program_specs
from baremetal.supervisord.client import SupervisorClient
from tests.install.fakes import h100_nvml
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real supervisord and real servers


def by_name(checks):
    return {check.name: check for check in checks}


def test_doctor_on_a_gpu_stack(write_stack, short_tmp):
    model = short_tmp / "models" / "chat"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    api_port, metrics_port = free_port(), free_port()
    stack = load_stack(write_stack(f'''
        [stack]
        name = "doc"
        root = "state"
        models_dir = "models"
        [env.default]
        kind = "system"
        python = "{sys.executable}"
        [api]
        port = {api_port}
        [watchdog]
        metrics_port = {metrics_port}
        [[model]]
        name = "chat"
        path = "chat"
        gpus = [0]
        [[model]]
        name = "big"
        path = "big"
        gpus = [3]
    '''))
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", api_port))
    squatter.listen()
    nvml = h100_nvml(2)
    try:
        checks = by_name(run_doctor(stack, program_specs(stack), nvml, SubprocessRunner(),
                                    SupervisorClient(stack.socket_path, timeout_s=2), [short_tmp]))
    finally:
        squatter.close()
    assert checks["nvidia driver"].status == "ok" and "2 GPU(s)" in checks["nvidia driver"].summary
    assert checks["gpus"].status == "fail" and "GPU 3 (vllm-big)" in checks["gpus"].summary
    assert checks["env default"].status == "fail" and "vllm not installed" in checks["env default"].summary
    assert checks["model chat"].status == "ok"
    assert checks["model big"].status == "fail" and "does not exist" in checks["model big"].summary
    port = checks[f"port {api_port}"]
    assert port.status == "fail" and f"pid {os.getpid()}" in port.summary and port.fix
    assert checks[f"port {metrics_port}"].status == "ok"
    assert checks["supervisord"].status == "ok" and "not running" in checks["supervisord"].summary
    assert checks["systemd unit"].status == "warn"
    assert ("init", ()) in nvml.calls and nvml.calls[-1] == ("shutdown", ())


def test_a_port_held_by_the_stacks_own_program_is_fine(write_stack, short_tmp):
    port = free_port()
    stack = load_stack(write_stack(f'''
        [stack]
        name = "own"
        root = "state"
        [api]
        kind = "none"
        [watchdog]
        enabled = false
        [[program]]
        name = "web"
        command = ["{sys.executable}", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
        health = "http://127.0.0.1:{port}/"
    '''))
    generate(stack)
    subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(stack.supervisord_conf)], check=True)
    client = SupervisorClient(stack.socket_path)
    try:
        wait_for(client.is_running, 15)
        from baremetal.doctor.gather import port_in_use

        wait_for(lambda: port_in_use("127.0.0.1", port), 15)
        checks = by_name(run_doctor(stack, program_specs(stack), h100_nvml(1), SubprocessRunner(), client, []))
        assert checks[f"port {port}"].status == "ok", checks[f"port {port}"]
        assert "held by this stack's web" in checks[f"port {port}"].summary
        assert checks["supervisord"].status == "ok" and "web " in checks["supervisord"].summary
    finally:
        daemon_pid = client.pid()
        client.shutdown()
        wait_for(lambda: not psutil.pid_exists(daemon_pid), 30)


def test_doctor_cli_on_this_host(write_stack, short_tmp):
    """The real NVML path on this machine (no NVIDIA driver) and --json; a CPU stack passes the host checks."""
    stack_file = write_stack(f'''
        [stack]
        name = "cpu"
        root = "state"
        [api]
        port = {free_port()}
        [watchdog]
        metrics_port = {free_port()}
        [[model]]
        name = "tiny"
        path = "/nonexistent/tiny"
        gpus = []
    ''')
    result = CliRunner().invoke(cli, ["doctor", "--json", "-c", str(stack_file)])
    report = json.loads(result.output)
    checks = {check["name"]: check for check in report["checks"]}
    assert result.exit_code == 1 and report["counts"]["fail"] >= 2          # env not built, model missing
    assert checks["env default"]["status"] == "fail" and checks["env default"]["fix"] == "run `baremetal install`"
    assert checks["model tiny"]["status"] == "fail"
    assert checks["/dev/shm"]["status"] == "ok"
    text = CliRunner().invoke(cli, ["doctor", "-c", str(stack_file)]).output
    assert "FAIL  model tiny" in text and "-> download it" in text
