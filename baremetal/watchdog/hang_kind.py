"""What kind of hang a stuck program is in, from NVML readings taken during the stall and its processes'
states. Pure: the loop keeps the readings, this only reads them.

- stopped by a signal: one of its processes is in state T (SIGSTOP, a debugger's job control);
- collective spin (likely an NCCL hang): every GPU of the program near 100% SM utilisation with almost
  no memory traffic and power near idle: the signature of kernels busy-waiting on a peer that never
  arrives (all ranks at ~96% SM, 0% memory, ~15 W in vLLM's issue 46097);
- engine stopped scheduling: work waits and its GPUs (or, without GPUs, its processes) do nothing;
- busy without progress: it computes (GPU memory traffic, or CPU) but its counters do not move;
- not answering: its liveness probe fails (the HTTP server itself is wedged);
- start stalled / load timeout: a start that shows no progress, or takes longer than load_timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean
from typing import Literal, Sequence

from baremetal.host.nvml import GpuSample

HangKind = Literal["collective_spin", "engine_stopped_scheduling", "stopped_by_signal", "busy_without_progress",
                   "not_answering", "start_stalled", "load_timeout"]
Cause = Literal["not_answering", "no_progress", "start_stalled", "load_timeout"]

WORDS: dict[str, str] = {
    "collective_spin": "collective spin (likely an NCCL hang)",
    "engine_stopped_scheduling": "engine stopped scheduling",
    "stopped_by_signal": "stopped by a signal",
    "busy_without_progress": "busy without progress",
    "not_answering": "not answering",
    "start_stalled": "start stalled",
    "load_timeout": "load timeout",
}

SPIN_MIN_SM_PERCENT = 90          # kernels resident the whole time ...
SPIN_MAX_MEMORY_PERCENT = 10      # ... moving almost no data ...
SPIN_MAX_POWER_FRACTION = 0.4     # ... at a power draw near idle (a real GEMM draws most of the limit)
IDLE_MAX_SM_PERCENT = 5


@dataclass(frozen=True)
class HangVerdict:
    """The kind, its words for people, and the readings that decided it."""

    kind: HangKind
    detail: str

    @property
    def words(self) -> str:
        return WORDS[self.kind]


def _per_gpu(window: Sequence[GpuSample]) -> dict[int, list[GpuSample]]:
    by_gpu: dict[int, list[GpuSample]] = {}
    for sample in window:
        by_gpu.setdefault(sample.index, []).append(sample)
    return by_gpu


def _average(samples: list[GpuSample], field: str) -> float | None:
    values = [getattr(sample, field) for sample in samples if getattr(sample, field) is not None]
    return mean(values) if values else None


def gpu_spin(window: Sequence[GpuSample]) -> str | None:
    """The readings, when every GPU in `window` shows the collective-spin signature; else None."""
    by_gpu = _per_gpu(window)
    if not by_gpu:
        return None
    parts = []
    for index, samples in sorted(by_gpu.items()):
        sm, memory = _average(samples, "utilization_gpu_percent"), _average(samples, "utilization_memory_percent")
        power, limit = _average(samples, "power_w"), _average(samples, "power_limit_w")
        if sm is None or memory is None or sm < SPIN_MIN_SM_PERCENT or memory > SPIN_MAX_MEMORY_PERCENT:
            return None
        if power is not None and limit and power > SPIN_MAX_POWER_FRACTION * limit:
            return None
        watts = f", {power:.0f} W of {limit:.0f} W" if power is not None and limit else ""
        parts.append(f"GPU {index}: SM {sm:.0f}%, memory {memory:.0f}%{watts}")
    return "; ".join(parts) + f" over {len(window) // len(by_gpu)} reading(s)"


def gpu_idle(window: Sequence[GpuSample]) -> str | None:
    """The readings, when every GPU in `window` ran (almost) no kernel; else None."""
    by_gpu = _per_gpu(window)
    if not by_gpu:
        return None
    parts = []
    for index, samples in sorted(by_gpu.items()):
        sm = _average(samples, "utilization_gpu_percent")
        if sm is None or sm > IDLE_MAX_SM_PERCENT:
            return None
        parts.append(f"GPU {index}: SM {sm:.0f}%")
    return "; ".join(parts)


def classify(cause: Cause | None, stopped: Sequence[str], pending: bool, cpu_share: float | None,
             window: Sequence[GpuSample], busy_cpu_fraction: float = 0.2) -> HangVerdict | None:
    """The kind of hang behind a decision to restart for `cause` (None: not a hang, e.g. a crash loop).

    `window`: readings of the program's GPUs during the stall (empty on CPU or without NVML);
    `cpu_share`: CPU its processes used during the stall, in cores (None: unknown)."""
    if cause is None:
        return None
    if cause in ("start_stalled", "load_timeout"):
        return HangVerdict(cause, "while loading")
    if stopped:
        return HangVerdict("stopped_by_signal", f"in state T: {', '.join(stopped)}")
    if cause == "not_answering":
        return HangVerdict("not_answering", "its liveness probe fails")
    spin = gpu_spin(window)
    if spin:
        return HangVerdict("collective_spin", spin)
    idle = gpu_idle(window)
    if idle and pending:
        return HangVerdict("engine_stopped_scheduling", f"work pending, {idle}")
    if not window and pending and cpu_share is not None and cpu_share < busy_cpu_fraction:
        return HangVerdict("engine_stopped_scheduling", f"work pending, its processes at {cpu_share:.0%} of a core")
    computing = f"its processes at {cpu_share:.0%} of a core" if cpu_share is not None else "computing"
    return HangVerdict("busy_without_progress", f"{computing}{'; GPUs busy' if window else ''}")


def nvml_alone(readings: Sequence[GpuSample]) -> dict | None:
    """What GPU readings alone say of a stall with work pending (the processes' states aside), for the evidence."""
    verdict = classify("no_progress", (), True, None, readings) if readings else None
    return None if verdict is None else {"kind": verdict.kind, "words": verdict.words, "detail": verdict.detail}
