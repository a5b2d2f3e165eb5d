"""The watchdog loop with real supervisord and a real program, and the NVML seam faked (no GPU here):
a hardware Xid stops the program for good; a restart kills leftovers that still hold its GPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from baremetal.host.nvml import GpuMonitor
from baremetal.host.processes import is_alive
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


@pytest.fixture
def gpu_stack(write_stack):
    port = free_port()
    return write_stack(f'''
        [stack]
        name = "wdgpu"
        root = "state"
        [api]
        kind = "none"
        [watchdog]
        enabled = false          # this test runs the watchdog in-process, with a fake NVML
        [[program]]
        name = "web"
        command = ["{sys.executable}", "{SERVER}", "--port", "{port}"]
        health = "http://127.0.0.1:{port}/health"
        gpus = [0]
        startsecs = 1
    ''')


class InProcess:
    """A WatchdogLoop driven tick by tick."""

    def __init__(self, run, nvml: FakeNvml):
        self.monitor = GpuMonitor(nvml=nvml)
        assert self.monitor.start()
        stack = run.stack
        self.http = LiteClient()
        self.watchdog = WatchdogLoop(stack.watchdog, program_specs(stack), lambda: SupervisorClient(stack.socket_path),
                                 self.http, self.monitor, EventLog(events_path(stack.root)), stack.watchdog_state_path)

    def until(self, predicate, timeout_s: float, what: str):
        def ticked():
            self.watchdog.tick()
            time.sleep(0.2)
            return predicate()
        return wait_for(ticked, timeout_s, interval_s=0, what=what)


def test_hardware_xid_stops_the_program_and_keeps_it_stopped(gpu_stack):
    nvml = FakeNvml([FakeGpu(), FakeGpu(uuid="GPU-one")])
    with watched_stack(gpu_stack) as run:
        loop = InProcess(run, nvml)
        loop.until(lambda: run.program("web").get("phase") == "ready", 30, "web ready")
        nvml.queue_xid(1, 79)                  # not its GPU: a warning only
        loop.until(lambda: run.events(kind="gpu"), 5, "gpu warning")
        assert run.program("web")["phase"] == "ready"
        nvml.queue_xid(0, 79)
        fault = loop.until(lambda: run.events("web", "hardware_fault"), 5, "hardware_fault event")[0]
        assert "GPU 0 reported Xid 79 (GPU has fallen off the bus)" in fault["message"]
        assert fault["gpus"][0]["index"] == 0 and "listening on" in " ".join(fault["log_tail"]["stdout"])
        loop.until(lambda: run.client.process("web").state == ProcessState.STOPPED, 20, "web stopped")
        for _ in range(3):
            loop.watchdog.tick()
        assert run.client.process("web").state == ProcessState.STOPPED
        assert run.program("web")["phase"] == "hardware_fault" and not run.events("web", "restart")


def test_restart_kills_leftovers_holding_its_gpu_and_waits_for_the_memory(gpu_stack):
    with watched_stack(gpu_stack) as run:
        leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True,
                                    env=dict(os.environ, SUPERVISOR_PROCESS_NAME="web"))
        stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        try:
            wait_for(lambda: run.client.process("web").state == ProcessState.RUNNING, 20, what="web running")
            web_pid = run.pid("web")
            nvml = FakeNvml([FakeGpu(processes=[(web_pid, 2 << 30), (leftover.pid, 8 << 30),
                                                (stranger.pid, 1 << 30)])], live_pids_only=True)
            loop = InProcess(run, nvml)
            loop.until(lambda: run.program("web").get("phase") == "ready", 30, "web ready")
            os.kill(web_pid, signal.SIGSTOP)
            report = loop.until(lambda: run.events("web", "restarted"), 30, "restarted event")[0]["report"]
            assert report["gpu_leftovers"] == [leftover.pid] and report["gpu_memory_freed"] is True
            assert report["resumed"] == [web_pid]
            leftover.wait(10)
            assert is_alive(stranger.pid)         # another program's process on the same GPU is left alone
        finally:
            for process in (leftover, stranger):
                process.kill()
                process.wait()
