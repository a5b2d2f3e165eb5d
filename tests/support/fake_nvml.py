"""A recording fake of the NVML seam (nvidia-ml-py's `pynvml` module), for hosts without a GPU.

It has the functions, constants and error class baremetal.gpu uses, keeps every call in `calls`, and
lets a test set each GPU's readings, make any query answer NotSupported, and queue Xid events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from baremetal.host.processes import is_alive

NVML_TEMPERATURE_GPU = 0
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
nvmlEventTypeXidCriticalError = 0x8


class NVMLError(Exception):
    """Like pynvml.NVMLError: `value` is the NVML return code."""

    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    temperature_c: int = 35
    memory_used_bytes: int = 1 << 30
    memory_total_bytes: int = 80 << 30
    utilization_gpu: int = 0
    utilization_memory: int = 0
    power_mw: int = 70_000
    power_limit_mw: int = 700_000
    throttle_mask: int = 0x1
    ecc_uncorrected_volatile: int = 0
    ecc_corrected_volatile: int = 0
    ecc_uncorrected_aggregate: int = 0
    remapped_rows: tuple = (0, 0, 0, 0)
    processes: list = field(default_factory=list)        # [(pid, bytes)]
    supports_events: bool = True


class FakeNvml:
    """Stands in for the pynvml module. `not_supported` names queries that answer NotSupported."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu] | None = None, not_supported: set[str] | None = None,
                 init_error: int | None = None, live_pids_only: bool = False):
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.live_pids_only = live_pids_only          # list a process only while it runs, as the driver does
        self.not_supported = set(not_supported or ())
        self.init_error = init_error
        self.calls: list[tuple] = []
        self.pending_events: list[tuple[int, int]] = []      # (gpu index, xid)
        self.registered: list[int] = []
        for name, value in globals().items():
            if name.startswith(("NVML_", "nvmlEventType")):
                setattr(self, name, value)

    def _call(self, name: str, *args):
        self.calls.append((name,) + args)
        if name in self.not_supported or "*" in self.not_supported and name not in (
                "nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlShutdown"):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    def _gpu(self, handle) -> FakeGpu:
        return self.gpus[handle]

    def queue_xid(self, gpu_index: int, xid: int) -> None:
        """The driver reports Xid `xid` on GPU `gpu_index`."""
        self.pending_events.append((gpu_index, xid))

    def nvmlInit(self):
        self._call("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self):
        self._call("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self):
        self._call("nvmlSystemGetDriverVersion")
        return "580.159.04"

    def nvmlDeviceGetCount(self):
        self._call("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._call("nvmlDeviceGetHandleByIndex", index)
        return index

    def nvmlDeviceGetIndex(self, handle):
        self._call("nvmlDeviceGetIndex", handle)
        return handle

    def nvmlDeviceGetName(self, handle):
        self._call("nvmlDeviceGetName", handle)
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle):
        self._call("nvmlDeviceGetUUID", handle)
        return self._gpu(handle).uuid

    def nvmlDeviceGetTemperature(self, handle, sensor):
        self._call("nvmlDeviceGetTemperature", handle, sensor)
        return self._gpu(handle).temperature_c

    def nvmlDeviceGetMemoryInfo(self, handle):
        self._call("nvmlDeviceGetMemoryInfo", handle)
        gpu = self._gpu(handle)
        return SimpleNamespace(used=gpu.memory_used_bytes, total=gpu.memory_total_bytes,
                               free=gpu.memory_total_bytes - gpu.memory_used_bytes)

    def nvmlDeviceGetUtilizationRates(self, handle):
        self._call("nvmlDeviceGetUtilizationRates", handle)
        gpu = self._gpu(handle)
        return SimpleNamespace(gpu=gpu.utilization_gpu, memory=gpu.utilization_memory)

    def nvmlDeviceGetPowerUsage(self, handle):
        self._call("nvmlDeviceGetPowerUsage", handle)
        return self._gpu(handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        self._call("nvmlDeviceGetEnforcedPowerLimit", handle)
        return self._gpu(handle).power_limit_mw

    def nvmlDeviceGetFanSpeed(self, handle):
        self._call("nvmlDeviceGetFanSpeed", handle)
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)          # as on an H100 (measured)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle):
        self._call("nvmlDeviceGetRetiredPagesPendingStatus", handle)
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)          # as on an H100 (measured)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        self._call("nvmlDeviceGetCurrentClocksEventReasons", handle)
        return self._gpu(handle).throttle_mask

    def nvmlDeviceGetTotalEccErrors(self, handle, error_type, counter_type):
        self._call("nvmlDeviceGetTotalEccErrors", handle, error_type, counter_type)
        gpu = self._gpu(handle)
        if error_type == NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return gpu.ecc_corrected_volatile
        return gpu.ecc_uncorrected_volatile if counter_type == NVML_VOLATILE_ECC else gpu.ecc_uncorrected_aggregate

    def nvmlDeviceGetRemappedRows(self, handle):
        self._call("nvmlDeviceGetRemappedRows", handle)
        return self._gpu(handle).remapped_rows

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        self._call("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self._gpu(handle).processes
                if not self.live_pids_only or is_alive(pid)]

    def nvmlEventSetCreate(self):
        self._call("nvmlEventSetCreate")
        return "event-set"

    def nvmlDeviceRegisterEvents(self, handle, event_types, event_set):
        self._call("nvmlDeviceRegisterEvents", handle, event_types, event_set)
        if not self._gpu(handle).supports_events:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        self.registered.append(handle)

    def nvmlEventSetWait_v2(self, event_set, timeout_ms):
        self._call("nvmlEventSetWait_v2", event_set, timeout_ms)
        while self.pending_events:
            index, xid = self.pending_events.pop(0)
            if index in self.registered:
                return SimpleNamespace(device=index, eventType=nvmlEventTypeXidCriticalError, eventData=xid,
                                       gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
        raise NVMLError(NVML_ERROR_TIMEOUT)

    def nvmlEventSetFree(self, event_set):
        self._call("nvmlEventSetFree", event_set)
