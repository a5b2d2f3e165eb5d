"""Signs that a loading program is getting somewhere: its log growing, its GPU memory growing, its CPU
time, the bytes its processes read (weights). A start with none of them for `start_stall_after` is
stalled (policy.py decides); a slow start that shows any of them is never cut short.

`moved` is pure; `LoadWatch` gathers the readings (log sizes by stat, /proc/<pid>/io through psutil,
GPU memory per process from the NVML sample the loop already took).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import psutil

from baremetal.host.nvml import GpuSample

MIN_GPU_GROWTH_BYTES = 16 << 20      # allocator noise stays below this; a weight shard is far above
MIN_READ_GROWTH_BYTES = 1 << 20      # reading config files is not loading weights
MIN_CPU_SHARE = 0.05                 # of one core: an idle interpreter's threads use far less


@dataclass(frozen=True)
class LoadReading:
    """Cumulative counters of one program while it loads."""

    log_bytes: int          # its stdout and stderr log files
    gpu_bytes: int          # GPU memory its processes hold
    read_bytes: int         # bytes its processes read (rchar or storage reads, whichever is larger)


def moved(before: LoadReading | None, after: LoadReading, cpu_s: float, elapsed_s: float) -> tuple[str, ...]:
    """The signs of progress between two readings (`cpu_s` used in `elapsed_s`), as words; () if none."""
    signs = []
    if before is not None:
        if after.log_bytes > before.log_bytes:
            signs.append(f"log +{after.log_bytes - before.log_bytes} bytes")
        if after.gpu_bytes - before.gpu_bytes >= MIN_GPU_GROWTH_BYTES:
            signs.append(f"GPU memory +{(after.gpu_bytes - before.gpu_bytes) / 2**20:.0f} MiB")
        if after.read_bytes - before.read_bytes >= MIN_READ_GROWTH_BYTES:
            signs.append(f"read +{(after.read_bytes - before.read_bytes) / 2**20:.0f} MiB")
    if elapsed_s > 0 and cpu_s >= MIN_CPU_SHARE * elapsed_s:
        signs.append(f"CPU {cpu_s / elapsed_s:.0%} of a core")
    return tuple(signs)


class LoadWatch:
    """Follows one program's load; `look` once per tick while it loads."""

    def __init__(self, log_paths: Sequence[Path]):
        self.log_paths = tuple(log_paths)
        self.previous: LoadReading | None = None
        self.previous_s: float | None = None

    def reset(self) -> None:
        """A new process: its counters start again."""
        self.previous, self.previous_s = None, None

    def look(self, pids: Sequence[int], samples: Sequence[GpuSample], cpu_s: float, now_s: float) -> tuple[str, ...]:
        """The signs of progress since the last look (`cpu_s`: CPU its tree used since then)."""
        reading = LoadReading(log_bytes=sum(_size(path) for path in self.log_paths),
                              gpu_bytes=_gpu_bytes(pids, samples), read_bytes=_read_bytes(pids))
        elapsed_s = now_s - self.previous_s if self.previous_s is not None else 0.0
        signs = moved(self.previous, reading, cpu_s, elapsed_s)
        self.previous, self.previous_s = reading, now_s
        return signs


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _gpu_bytes(pids: Sequence[int], samples: Sequence[GpuSample]) -> int:
    mine = set(pids)
    return sum(p.memory_used_bytes or 0 for s in samples for p in s.processes or () if p.pid in mine)


def _read_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            counters = psutil.Process(pid).io_counters()
        except (psutil.Error, AttributeError, OSError):
            continue                    # gone, or not ours to read
        total += max(getattr(counters, "read_chars", 0), counters.read_bytes)
    return total
