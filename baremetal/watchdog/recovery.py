"""One recovery job, run in a worker thread: the evidence (before the kill), the clean stop, then the
start, on the same GPUs or, when they turned out bad, on spares (or not at all, with the reason).

A GPU turns out bad here when memory stays held on it after every process of ours is gone (a hang that
survives a restart, vLLM's issue 45094); GPUs with a hardware fault were cordoned by the loop already.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from baremetal.host.cordon import cordon, cordon_path
from baremetal.host.nvml import GpuMonitor
from baremetal.supervisord.client import SupervisorClient
from baremetal.watchdog.evidence import Collector, Request, Result
from baremetal.watchdog.replacement import MoveResult, Mover, reset_gpu
from baremetal.watchdog.restart import RestartReport, stop_and_start


@dataclass(frozen=True)
class Job:
    """Everything a recovery needs, decided in the loop's thread."""

    client: SupervisorClient
    name: str
    gpus: tuple[int, ...]
    monitor: GpuMonitor | None
    kill_after_s: float
    start: bool                                   # restart (True) or stop and leave stopped (False)
    keep_going: Callable[[], bool]
    run_dir: Path
    evidence: tuple[Collector, Request] | None = None
    move: bool = False                            # its GPUs were cordoned: re-place instead of a plain start
    mover: Mover | None = None
    gpu_reset: bool = False
    reset_with: Any = None                        # (run seam, nvidia-smi path) for reset_gpu


@dataclass(frozen=True)
class Outcome:
    report: RestartReport
    evidence: Result | None = None
    cordoned: tuple[str, ...] = ()                # "GPU N: why", cordoned by this job
    move: MoveResult | None = None
    resets: tuple[str, ...] = field(default_factory=tuple)

    @property
    def started(self) -> bool:
        return self.report.started or bool(self.move and self.move.started)


def run(job: Job) -> Outcome:
    """Evidence, stop, then start / re-place; never raises."""
    evidence = job.evidence[0].collect(job.evidence[1]) if job.evidence else None
    report = stop_and_start(job.client, job.name, job.gpus, job.monitor, job.kill_after_s,
                            job.start and not job.move, job.keep_going)
    cordoned = []
    for gpu, held in report.gpu_memory_held:
        reason = (f"{held / 2**30:.1f} GiB of memory held by no process after every process of {job.name} was gone "
                  "(a GPU a restart does not clear)")
        uuid = next((s.uuid for s in (job.monitor.sample() if job.monitor and job.monitor.available else [])
                     if s.index == gpu), None)
        if cordon(cordon_path(job.run_dir), gpu, reason, uuid):
            cordoned.append(f"GPU {gpu}: {reason}")
    move = None
    if (job.move or report.gpu_memory_held) and job.mover is not None and job.keep_going():
        move = job.mover.move(job.client, job.name, start=job.start or job.move)
    resets = []
    if job.gpu_reset and job.reset_with is not None and (job.move or report.gpu_memory_held):
        from baremetal.host.cordon import cordoned_gpus

        for gpu in sorted(set(job.gpus) & cordoned_gpus(cordon_path(job.run_dir))):
            resets.append(f"GPU {gpu}: {reset_gpu(job.run_dir, gpu, job.monitor, *job.reset_with)}")
    return Outcome(report, evidence, tuple(cordoned), move, tuple(resets))
