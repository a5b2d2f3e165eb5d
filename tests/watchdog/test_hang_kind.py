"""The kind of a hang, from NVML readings during the stall and the processes' states: a table."""

from __future__ import annotations

import pytest

from baremetal.host.nvml import GpuSample
from baremetal.watchdog.hang_kind import WORDS, classify, gpu_spin


def readings(gpus=(0,), sm=0, memory=0, power=70.0, limit=700.0, count=3):
    return [GpuSample(index=g, time_s=float(t), utilization_gpu_percent=sm, utilization_memory_percent=memory,
                      power_w=power, power_limit_w=limit) for t in range(count) for g in gpus]


@pytest.mark.parametrize("name,cause,stopped,pending,cpu,window,kind,words", [
    ("a process in state T", "no_progress", ("2573 (VLLM::EngineCore)",), True, 0.0, readings(sm=100),
     "stopped_by_signal", "2573 (VLLM::EngineCore)"),
    ("all ranks at 96% SM, no memory traffic, idle power (vLLM 46097)", "no_progress", (), True, 1.0,
     readings(gpus=(0, 1), sm=96, memory=0, power=15.0), "collective_spin", "GPU 1: SM 96%, memory 0%, 15 W of 700 W"),
    ("busy SM with memory traffic is real work, not a spin", "no_progress", (), True, 1.0,
     readings(sm=99, memory=45, power=500.0), "busy_without_progress", "GPUs busy"),
    ("busy SM at full power is real work", "no_progress", (), True, 1.0,
     readings(sm=99, memory=3, power=650.0), "busy_without_progress", ""),
    ("one GPU spins, the other idles: not every rank spins", "no_progress", (), True, 1.0,
     readings(gpus=(0,), sm=97) + readings(gpus=(1,), sm=0), "busy_without_progress", ""),
    ("0% SM with work pending", "no_progress", (), True, 0.0, readings(sm=0), "engine_stopped_scheduling",
     "GPU 0: SM 0%"),
    ("no GPU: idle processes with work pending", "no_progress", (), True, 0.03, [], "engine_stopped_scheduling",
     "3% of a core"),
    ("no GPU: busy processes without progress", "no_progress", (), True, 0.9, [], "busy_without_progress",
     "90% of a core"),
    ("probes failing", "not_answering", (), False, 0.0, [], "not_answering", ""),
    ("probes failing because it was stopped", "not_answering", ("41 (python)",), False, 0.0, [],
     "stopped_by_signal", "41 (python)"),
    ("a stalled start", "start_stalled", (), False, 0.0, [], "start_stalled", ""),
    ("a start past load_timeout", "load_timeout", (), False, 0.0, [], "load_timeout", ""),
])
def test_classify(name, cause, stopped, pending, cpu, window, kind, words):
    verdict = classify(cause, stopped, pending, cpu, window)
    assert verdict is not None and verdict.kind == kind, verdict
    assert words in verdict.detail
    assert verdict.words == WORDS[kind]


def test_not_a_hang():
    assert classify(None, ("1 (x)",), True, 0.0, readings(sm=100)) is None


def test_words():
    assert WORDS["collective_spin"] == "collective spin (likely an NCCL hang)"
    assert WORDS["engine_stopped_scheduling"] == "engine stopped scheduling"
    assert WORDS["stopped_by_signal"] == "stopped by a signal"


def test_spin_needs_readings_that_say_so():
    assert gpu_spin([]) is None
    unknown = [GpuSample(index=0, time_s=0.0, utilization_gpu_percent=None, utilization_memory_percent=None)]
    assert gpu_spin(unknown) is None
    no_power = [GpuSample(index=0, time_s=0.0, utilization_gpu_percent=98, utilization_memory_percent=1)]
    assert gpu_spin(no_power).startswith("GPU 0: SM 98%, memory 1%")
