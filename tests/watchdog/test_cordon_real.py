"""Bad GPUs worked around, with real supervisord, a real program and the recording NVML fake (no GPU here):
a fatal Xid, an uncorrectable ECC error, failed row remapping and memory held by no process each cordon the
GPU; the program comes back on a spare GPU (its new process really has the new CUDA_VISIBLE_DEVICES), or is
stopped with the reason when none is free; `baremetal uncordon` brings the GPU back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from baremetal.host.cordon import cordon_path, read_cordons
from baremetal.host.nvml import GpuMonitor
from baremetal.plan.pipeline import program_specs
from baremetal.stack.http_client import LiteClient
from baremetal.supervisord.client import SupervisorClient
from baremetal.supervisord.states import ProcessState
from baremetal.watchdog.events import EventLog, events_path
from baremetal.watchdog.loop import WatchdogLoop
from tests.support.fake_nvml import FakeGpu, FakeNvml
from tests.support.ports import free_port
from tests.support.waiting import wait_for
from tests.support.watched import SERVER, watched_stack

pytestmark = pytest.mark.e2e   # real supervisord and real servers


def stack_text(port: int, spares: str) -> str:
    return f'''
        [stack]
        name = "wdcordon"
        root = "state"
        spare_gpus = {spares}
        [api]
        kind = "none"
        [watchdog]
        enabled = false          # this test runs the watchdog in-process, with a fake NVML
        kill_after = "2s"
        [[program]]
        name = "web"
        command = ["{sys.executable}", "{SERVER}", "--port", "{port}"]
        health = "http://127.0.0.1:{port}/health"
        gpus = [0]
        startsecs = 1
    '''


class InProcess:
    """A WatchdogLoop (with its stack, so it can re-place programs) driven tick by tick."""

    def __init__(self, run, nvml: FakeNvml):
        self.monitor = GpuMonitor(nvml=nvml)
        assert self.monitor.start()
        stack = run.stack
        self.watchdog = WatchdogLoop(stack.watchdog, program_specs(stack), lambda: SupervisorClient(stack.socket_path),
                                     LiteClient(), self.monitor, EventLog(events_path(stack.root)),
                                     stack.watchdog_state_path, stack=stack)

    def until(self, predicate, timeout_s: float, what: str):
        def ticked():
            self.watchdog.tick()
            time.sleep(0.2)
            return predicate()
        return wait_for(ticked, timeout_s, interval_s=0, what=what)


def visible_devices(run) -> str | None:
    return psutil.Process(run.pid("web")).environ().get("CUDA_VISIBLE_DEVICES")


def moved_to(run, loop, gpu: int, timeout_s: float = 30):
    loop.until(lambda: run.program("web").get("phase") == "ready" and run.client.process("web").state
               == ProcessState.RUNNING and visible_devices(run) == str(gpu), timeout_s, f"web ready on GPU {gpu}")


def test_faults_cordon_the_gpu_and_the_program_moves_to_a_spare_until_none_is_left(write_stack):
    stack_file = write_stack(stack_text(free_port(), "[2, 3]"))
    nvml = FakeNvml([FakeGpu(uuid=f"GPU-{n}") for n in range(4)])
    with watched_stack(stack_file) as run:
        loop = InProcess(run, nvml)
        loop.until(lambda: run.program("web").get("phase") == "ready", 30, "web ready")
        assert visible_devices(run) == "0"
        cordons = cordon_path(run.stack.run_dir)

        nvml.queue_xid(0, 79)                                              # a fatal Xid on its GPU
        moved_to(run, loop, 2)
        assert read_cordons(cordons)[0].reason.startswith("GPU 0 reported Xid 79 (GPU has fallen off the bus)")
        assert read_cordons(cordons)[0].uuid == "GPU-0"
        restarted = [e for e in run.events("web", "restarted") if "re-placed" in e["message"]][-1]
        assert "web re-placed on GPU 2 (CUDA_VISIBLE_DEVICES=2); started" in restarted["message"]
        assert run.events(kind="cordon")[0]["message"].startswith("GPU 0 cordoned: GPU 0 reported Xid 79")
        assert "CUDA_VISIBLE_DEVICES=\"2\"" in (run.stack.supervisor_dir / "conf.d" / "web.conf").read_text()

        nvml.gpus[2].ecc_uncorrected_volatile = 1                          # an uncorrectable ECC error
        moved_to(run, loop, 3)
        assert "uncorrectable ECC errors rose from 0 to 1" in read_cordons(cordons)[2].reason

        nvml.gpus[3].remapped_rows = (0, 1, 0, 1)                          # row remapping failed: no spare left
        loop.until(lambda: run.client.process("web").state == ProcessState.STOPPED and "stays stopped" in
                   run.program("web").get("reason", ""), 30, "web stopped, no spare")
        assert run.program("web")["phase"] == "hardware_fault"
        assert "row remapping failed" in read_cordons(cordons)[3].reason
        reason = run.program("web")["reason"]
        assert "web stays stopped: GPU 0 is cordoned and 1 spare GPU(s) needed, 0 free (spare_gpus: 2 cordoned, " \
            "3 cordoned)" in reason, reason
        for _ in range(3):
            loop.watchdog.tick()
        assert run.client.process("web").state == ProcessState.STOPPED      # not started on a cordoned GPU
        status = subprocess.run([sys.executable, "-m", "baremetal", "-c", str(stack_file), "status", "--json"],
                                capture_output=True, text=True, timeout=60)
        document = json.loads(status.stdout)
        assert sorted(document["cordoned"]) == ["0", "2", "3"]
        assert "GPU 0 is cordoned" in next(p for p in document["programs"] if p["name"] == "web")["blocked"]

        back = subprocess.run([sys.executable, "-m", "baremetal", "-c", str(stack_file), "uncordon", "0"],
                              capture_output=True, text=True, timeout=60)
        assert back.returncode == 0 and "GPU 0 uncordoned" in back.stdout, back.stdout + back.stderr
        moved_to(run, loop, 0)
        assert sorted(read_cordons(cordons)) == [2, 3]


def test_memory_held_by_no_process_after_a_restart_cordons_the_gpu(write_stack):
    stack_file = write_stack(stack_text(free_port(), "[1]"))
    with watched_stack(stack_file) as run:
        wait_for(lambda: run.client.process("web").state == ProcessState.RUNNING, 20, what="web running")
        web = run.pid("web")
        # 30 GiB used, 28 of them by web: once web is gone, 30 GiB stay used with no process listed
        nvml = FakeNvml([FakeGpu(memory_used_bytes=30 << 30, processes=[(web, 28 << 30)]), FakeGpu(uuid="GPU-1")],
                        live_pids_only=True)
        loop = InProcess(run, nvml)
        loop.until(lambda: run.program("web").get("phase") == "ready", 30, "web ready")
        os.kill(web, signal.SIGSTOP)
        moved_to(run, loop, 1, timeout_s=45)
        entry = read_cordons(cordon_path(run.stack.run_dir))[0]
        assert entry.reason.startswith("30.0 GiB of memory held by no process after every process of web was gone")
        stopped = [e for e in run.events("web", "restarted") if "held by no process" in e["message"]][-1]
        assert stopped["report"]["gpu_memory_held"] == [[0, 30 << 30]]
