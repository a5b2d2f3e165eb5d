"""What `top` reads and what it shows, as plain data.

A Reading is what the sources returned at one moment (supervisord's process list, the state files under
<root>/run, the gateway's /metrics page, NVML, the newest events, a log tail). builder.FrameBuilder
turns each into a Frame, which the text view (`top --once`) and the Textual view both draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from baremetal.supervisord.client import ProcessInfo


@dataclass(frozen=True)
class LogTail:
    """The end of one program's log file."""

    program: str
    stream: str                               # "stdout" | "stderr"
    path: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Reading:
    """What the sources returned at `time_s`, as read; None or [] where a source had nothing."""

    time_s: float
    processes: tuple[ProcessInfo, ...] | None      # None: supervisord did not answer (see supervisord_error)
    supervisord_error: str | None = None
    watchdog: Mapping[str, Any] | None = None      # run/watchdog.json
    gateway_state: Mapping[str, Any] | None = None  # run/gateway.json
    drain: Mapping[str, Any] | None = None          # run/drain.json
    cordon: Mapping[str, Any] | None = None         # run/cordon.json
    metrics_text: str | None = None                # the gateway's /metrics page
    metrics_error: str | None = None
    gpus: tuple[Mapping[str, Any], ...] = ()       # GpuSample.to_json() readings
    gpus_from: str | None = None                   # "nvml" | "watchdog"
    no_gpu_reason: str | None = None
    gpu_owners: Mapping[int, str] = field(default_factory=dict)   # pid on a GPU -> its program
    spawns: Mapping[str, int] | None = None        # supervisord's spawns per program since it started
    events: tuple[Mapping[str, Any], ...] = ()     # the newest events, oldest first
    log: LogTail | None = None


@dataclass(frozen=True)
class ProgramRow:
    """One program: supervisord's state, the watchdog's verdict, the gateway's view, its GPU memory."""

    name: str
    state: str                    # a ProcessState name, or "NOT LOADED"
    pid: int | None
    uptime_s: float | None
    ready: bool | None            # the watchdog's verdict; None: no fresh watchdog report
    verdict: str                  # the watchdog's phase (loading, ready, stuck, ...), "-" without one
    reason: str
    restarts: int | None          # spawns since supervisord started, less the first
    watchdog_restarts: int | None
    port: int | None
    gpus: tuple[int, ...] | None
    gpu_memory_bytes: int | None  # held on the GPUs by its processes; None: nothing seen on a GPU
    model: str | None
    draining: bool = False
    in_flight: int | None = None  # from gateway.json
    evidence: str | None = None


@dataclass(frozen=True)
class ModelRow:
    """One served model, from the gateway's metrics (None: not known, e.g. no second reading yet)."""

    name: str
    backends: int
    ready_backends: int | None
    requests_per_s: float | None
    in_flight: int | None
    held: int | None
    migrated_per_min: float | None
    ttft_p50_s: float | None
    tokens_per_s: float | None
    errors_per_min: float | None
    tokens_history: tuple[float, ...] = ()   # tokens/s, one value a reading, oldest first


@dataclass(frozen=True)
class KeyRow:
    """One key name's use of one model."""

    key: str
    model: str
    requests_per_s: float | None
    tokens_per_s: float | None
    errors_per_min: float | None
    rate_limited_per_min: float | None


@dataclass(frozen=True)
class GpuRow:
    """One GPU's readings, whether it is cordoned, and who holds its memory."""

    index: int
    name: str | None
    utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    throttle: tuple[str, ...]
    ecc_uncorrected: int | None
    cordoned: str | None                     # why, when cordoned
    programs: tuple[tuple[str, int], ...]    # (program or pid, bytes) holding memory on it
    utilization_history: tuple[float, ...] = ()


@dataclass(frozen=True)
class EventRow:
    """One of the watchdog's events."""

    time_s: float
    program: str | None
    kind: str
    message: str
    event: Mapping[str, Any]                 # the whole event: evidence, details


@dataclass(frozen=True)
class Frame:
    """Everything one refresh shows."""

    stack: str
    time_s: float
    supervisord_error: str | None
    programs: tuple[ProgramRow, ...]
    models: tuple[ModelRow, ...]
    keys: tuple[KeyRow, ...]
    gpus: tuple[GpuRow, ...]
    no_gpu_reason: str | None
    gpus_from: str | None
    events: tuple[EventRow, ...]             # newest first
    watchdog_age_s: float | None
    watchdog_fresh: bool
    gateway_note: str | None                 # why there are no gateway figures
    tokens_history: tuple[float, ...] = ()   # all models' tokens/s, oldest first
    log: LogTail | None = None
    interval_s: float = 1.0                  # between readings (the sparklines' time scale)

    @property
    def ready_count(self) -> int:
        """Programs RUNNING and, where the watchdog says, ready."""
        return sum(1 for row in self.programs if row.state == "RUNNING" and row.ready is not False)

    def program(self, name: str) -> ProgramRow | None:
        """The row of one program."""
        return next((row for row in self.programs if row.name == name), None)
