"""GPU health through NVML: per-GPU readings and Xid critical-error events.

The NVML module (nvidia-ml-py's `pynvml`) is the seam: `GpuMonitor(nvml=...)` takes any object with
pynvml's functions, constants and `NVMLError`; without one it imports `pynvml` when started, never at
import time. No query raises: each reading is a value or None (NotSupported is normal: fan speed and
retired pages answer it on an H100), and a host without a driver gives `available == False` with a
reason an operator can act on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

# NVML return codes (nvml.h), for telling the reasons apart when NVML cannot start.
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_EVENT_TYPE_XID_CRITICAL_ERROR = 0x8

# Xids after which the GPU needs a reset, a reboot or service (NVIDIA's Xid catalog, "Resolution
# Bucket": RESET_GPU / RESTART_BM / CONTACT_SUPPORT): restarting the program there only loops.
XID_HARDWARE = {
    48: "double-bit (uncorrectable) ECC error",
    61: "internal micro-controller breakpoint",
    62: "internal micro-controller halt",
    64: "ECC row remapping failed",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
    140: "unrecovered ECC error",
}
# Xids that usually come from the program itself (its restart is the cure) or are informational.
XID_OTHER = {
    13: "graphics engine exception (usually the application)",
    31: "GPU memory page fault (usually the application)",
    43: "GPU stopped processing (usually the application)",
    45: "preemptive cleanup after an earlier error",
    63: "ECC row remapping recorded",
    92: "high single-bit ECC error rate",
    94: "contained ECC error (the application that hit it must restart)",
}
THROTTLE_REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
                    0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
                    0x100: "display_clocks"}


def describe_xid(xid: int) -> str:
    """A short meaning for an Xid number."""
    return XID_HARDWARE.get(xid) or XID_OTHER.get(xid) or "see NVIDIA's Xid catalog"


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU, as NVML sees it (pids are the host's)."""

    pid: int
    memory_used_bytes: int | None


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU; every field other than `index` is None where NVML could not tell."""

    index: int
    time_s: float
    uuid: str | None = None
    name: str | None = None
    temperature_c: int | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    utilization_gpu_percent: int | None = None
    utilization_memory_percent: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    fan_speed_percent: int | None = None
    throttle_reasons: tuple[str, ...] | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_corrected_volatile: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remap_pending: bool | None = None
    remap_failure: bool | None = None
    processes: tuple[GpuProcess, ...] | None = None

    def to_json(self) -> dict:
        """Plain JSON types (the state file, `baremetal gpus --json`)."""
        data = asdict(self)
        data["processes"] = None if self.processes is None else [asdict(p) for p in self.processes]
        data["throttle_reasons"] = None if self.throttle_reasons is None else list(self.throttle_reasons)
        return data


@dataclass(frozen=True)
class XidEvent:
    """An Xid critical error reported by the driver."""

    gpu_index: int | None
    xid: int
    time_s: float
    uuid: str | None = None

    @property
    def hardware(self) -> bool:
        """True when the GPU itself needs attention (reset, reboot, service)."""
        return self.xid in XID_HARDWARE

    @property
    def description(self) -> str:
        return describe_xid(self.xid)

    def to_json(self) -> dict:
        return {"gpu_index": self.gpu_index, "uuid": self.uuid, "xid": self.xid, "time_s": self.time_s,
                "hardware": self.hardware, "description": self.description}


def unavailable_reason(error: BaseException) -> str:
    """Why NVML cannot be used here, in words an operator can act on."""
    if isinstance(error, ImportError):
        return "NVML not available: nvidia-ml-py (pynvml) is not installed in baremetal's environment"
    code = getattr(error, "value", None)
    if code == NVML_ERROR_LIBRARY_NOT_FOUND:
        return ("NVML not available: no NVIDIA driver on this host (libnvidia-ml.so.1 not found); "
                "GPU health is not watched")
    if code == NVML_ERROR_DRIVER_NOT_LOADED:
        return "NVML not available: the NVIDIA kernel driver is not loaded (nvidia-smi fails too)"
    if code == NVML_ERROR_NO_PERMISSION:
        return "NVML not available: no permission to open the NVIDIA devices (/dev/nvidia*)"
    return f"NVML not available: {type(error).__name__}: {error}"


class GpuMonitor:
    """Samples every GPU and drains Xid events. Start it once; every call after that is cheap."""

    def __init__(self, nvml: Any = None, clock: Callable[[], float] = time.time):
        self._nvml = nvml
        self._clock = clock
        self._handles: list[Any] = []
        self._uuids: list[str | None] = []
        self._event_set: Any = None
        self._unsupported: set[tuple[str, str]] = set()     # (query, device) pairs that answered NotSupported
        self.reason: str | None = "NVML not started"
        self.driver_version: str | None = None
        self.xid_gpus: tuple[int, ...] = ()     # GPUs whose Xid events are being received

    @property
    def available(self) -> bool:
        return self.reason is None

    @property
    def count(self) -> int:
        return len(self._handles)

    def start(self, xid_events: bool = True) -> bool:
        """Initialise NVML, find the GPUs and register for Xid events (not for a one-off reading); False
        (see `reason`) if impossible."""
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
            count = self._nvml.nvmlDeviceGetCount()
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
        except Exception as error:  # noqa: BLE001 - any failure here means "no NVML", said in words
            self.reason = unavailable_reason(error)
            self._handles = []
            return False
        self.reason = None
        self.driver_version = _text(self._query(self._nvml.nvmlSystemGetDriverVersion))
        self._uuids = [_text(self._query(self._nvml.nvmlDeviceGetUUID, handle)) for handle in self._handles]
        if xid_events:
            self._register_xid_events()
        return True

    def _register_xid_events(self) -> None:
        self._event_set = self._query(self._nvml.nvmlEventSetCreate)
        if self._event_set is None:
            return
        registered = []
        event_type = getattr(self._nvml, "nvmlEventTypeXidCriticalError", NVML_EVENT_TYPE_XID_CRITICAL_ERROR)
        for index, handle in enumerate(self._handles):
            try:
                self._nvml.nvmlDeviceRegisterEvents(handle, event_type, self._event_set)
                registered.append(index)
            except Exception:  # noqa: BLE001 - NotSupported on some GPUs: readings still work
                continue
        self.xid_gpus = tuple(registered)

    def close(self) -> None:
        """Release the event set and NVML."""
        if self._nvml is None or self.reason is not None:
            return
        if self._event_set is not None:
            self._query(self._nvml.nvmlEventSetFree, self._event_set)
            self._event_set = None
        self._query(self._nvml.nvmlShutdown)
        self.reason = "NVML closed"

    def _query(self, function: Callable, *args: Any) -> Any:
        """function(*args), or None when it fails for any reason (NotSupported, GPU lost, ...).

        A query that answers NotSupported is not asked again for that device: it will not start
        working, and some cost more to refuse than others cost to answer (fan speed on an H100: 160 us
        to say NotSupported, measured, against 2-11 us for the readings that work)."""
        key = (getattr(function, "__name__", id(function)), repr(args[:1]))
        if key in self._unsupported:
            return None
        try:
            return function(*args)
        except Exception as error:  # noqa: BLE001 - hardware queries never raise into the loop
            if getattr(error, "value", None) == NVML_ERROR_NOT_SUPPORTED:
                self._unsupported.add(key)
            return None

    def sample(self) -> list[GpuSample]:
        """A reading of every GPU ([] when NVML is not available)."""
        if not self.available:
            return []
        return [self._sample_one(index, handle) for index, handle in enumerate(self._handles)]

    def _sample_one(self, index: int, handle: Any) -> GpuSample:
        nvml, query = self._nvml, self._query
        memory = query(nvml.nvmlDeviceGetMemoryInfo, handle)
        utilization = query(nvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = query(nvml.nvmlDeviceGetPowerUsage, handle)
        limit_mw = query(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        remapped = query(nvml.nvmlDeviceGetRemappedRows, handle)
        pending = query(getattr(nvml, "nvmlDeviceGetRetiredPagesPendingStatus", _missing), handle)
        return GpuSample(
            index=index, time_s=self._clock(), uuid=self._uuids[index] if index < len(self._uuids) else None,
            name=_text(query(nvml.nvmlDeviceGetName, handle)),
            temperature_c=query(nvml.nvmlDeviceGetTemperature, handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0)),
            memory_used_bytes=getattr(memory, "used", None), memory_total_bytes=getattr(memory, "total", None),
            utilization_gpu_percent=getattr(utilization, "gpu", None),
            utilization_memory_percent=getattr(utilization, "memory", None),
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            fan_speed_percent=query(nvml.nvmlDeviceGetFanSpeed, handle),
            throttle_reasons=self._throttle_reasons(handle),
            ecc_uncorrected_volatile=self._ecc(handle, uncorrected=True, volatile=True),
            ecc_corrected_volatile=self._ecc(handle, uncorrected=False, volatile=True),
            ecc_uncorrected_aggregate=self._ecc(handle, uncorrected=True, volatile=False),
            retired_pages_pending=bool(pending) if pending is not None else None,
            remapped_rows_correctable=remapped[0] if remapped else None,
            remapped_rows_uncorrectable=remapped[1] if remapped else None,
            remap_pending=bool(remapped[2]) if remapped else None,
            remap_failure=bool(remapped[3]) if remapped else None,
            processes=self._processes(handle))

    def _throttle_reasons(self, handle: Any) -> tuple[str, ...] | None:
        function = getattr(self._nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            getattr(self._nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", _missing)
        mask = self._query(function, handle)
        if mask is None:
            return None
        return tuple(name for bit, name in THROTTLE_REASONS.items() if mask & bit)

    def _ecc(self, handle: Any, uncorrected: bool, volatile: bool) -> int | None:
        error_type = getattr(self._nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED" if uncorrected
                             else "NVML_MEMORY_ERROR_TYPE_CORRECTED", 1 if uncorrected else 0)
        counter = getattr(self._nvml, "NVML_VOLATILE_ECC" if volatile else "NVML_AGGREGATE_ECC", 0 if volatile else 1)
        return self._query(self._nvml.nvmlDeviceGetTotalEccErrors, handle, error_type, counter)

    def _processes(self, handle: Any) -> tuple[GpuProcess, ...] | None:
        found = self._query(self._nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        if found is None:
            return None
        return tuple(GpuProcess(pid=int(p.pid), memory_used_bytes=getattr(p, "usedGpuMemory", None)) for p in found)

    def xid_events(self, limit: int = 256) -> list[XidEvent]:
        """Xid critical errors received since the last call; never waits."""
        if not self.available or self._event_set is None:
            return []
        events: list[XidEvent] = []
        for _ in range(limit):
            try:
                data = self._nvml.nvmlEventSetWait_v2(self._event_set, 0)
            except Exception:  # noqa: BLE001 - Timeout means "no more events"; anything else too
                break
            events.append(self._xid_event(data))
        return events

    def _xid_event(self, data: Any) -> XidEvent:
        index = self._query(self._nvml.nvmlDeviceGetIndex, data.device)
        uuid = self._uuids[index] if isinstance(index, int) and 0 <= index < len(self._uuids) else None
        return XidEvent(gpu_index=index, xid=int(data.eventData), time_s=self._clock(), uuid=uuid)


def _missing(*_args: Any) -> Any:
    raise NotImplementedError("not in this NVML binding")


def _text(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
