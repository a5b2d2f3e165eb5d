"""A GPU reset only where allowed and only with nothing on the GPU, through the subprocess seam."""

from __future__ import annotations

from baremetal.host.cordon import cordon, cordon_path, read_cordons
from baremetal.host.nvml import GpuMonitor
from baremetal.watchdog.metrics import render
from baremetal.watchdog.replacement import reset_gpu
from tests.support.fake_nvml import FakeGpu, FakeNvml


class Recording:
    def __init__(self, code=0):
        self.calls, self.code = [], code

    def __call__(self, argv, timeout_s):
        self.calls.append(list(argv))
        return self.code, "GPU 00000000:1B:00.0 was successfully reset." if self.code == 0 else "In use by another client"


def monitor(processes):
    nvml = FakeNvml([FakeGpu(), FakeGpu(processes=processes)])
    gpus = GpuMonitor(nvml=nvml)
    assert gpus.start(xid_events=False)
    return gpus


def test_reset_of_an_empty_gpu_is_recorded(tmp_path):
    cordon(cordon_path(tmp_path), 1, "GSP error")
    run = Recording()
    outcome = reset_gpu(tmp_path, 1, monitor([]), run, "/usr/bin/nvidia-smi")
    assert run.calls == [["/usr/bin/nvidia-smi", "-r", "-i", "1"]]
    assert outcome == "reset with nvidia-smi -r: ok" and read_cordons(cordon_path(tmp_path))[1].reset == outcome


def test_no_reset_while_any_process_uses_it(tmp_path):
    cordon(cordon_path(tmp_path), 1, "GSP error")
    run = Recording()
    outcome = reset_gpu(tmp_path, 1, monitor([(4242, 1 << 30)]), run, "/usr/bin/nvidia-smi")
    assert run.calls == [] and outcome == "not reset: 1 process(es) still use it (4242)"


def test_a_failed_reset_and_no_nvidia_smi(tmp_path):
    cordon(cordon_path(tmp_path), 1, "GSP error")
    assert reset_gpu(tmp_path, 1, monitor([]), Recording(3), "/usr/bin/nvidia-smi").startswith(
        "nvidia-smi -r failed (exit 3): In use by another client")
    assert reset_gpu(tmp_path, 1, monitor([]), Recording(), None) == "not reset: nvidia-smi is not installed"


def test_metrics_show_hangs_evidence_time_and_cordons():
    page = render({"web": {"phase": "ready", "hang_kind": "stopped_by_signal", "evidence_s": 0.06}}, [],
                  {"ticks": 1, "tick_s": 0.0, "cpu_s": 0.0}, {}, hangs={("web", "stopped_by_signal"): 2},
                  cordoned=frozenset({3}))
    assert 'baremetal_program_hangs_total{program="web",kind="stopped_by_signal"} 2' in page
    assert 'baremetal_program_hang{program="web",kind="stopped_by_signal"} 1' in page
    assert 'baremetal_program_evidence_seconds{program="web"} 0.06' in page
    assert 'baremetal_gpu_cordoned{gpu="3"} 1' in page
