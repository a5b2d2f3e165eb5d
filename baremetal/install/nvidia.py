"""What the host's NVIDIA driver says, for `install` (CPU or GPU packages) and `doctor`.

NVML is the seam: `read_gpus` takes any object with the `Nvml` methods below. `PynvmlLibrary` is the real
one (nvidia-ml-py, imported when first used); tests pass a recording fake. Every query may fail (no
driver, NotSupported on some boards): a failure is a None in the report, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class NvmlError(Exception):
    """An NVML call failed (no library, no driver, NotSupported...); the text says which."""


class Nvml(Protocol):
    """The NVML calls baremetal makes at install/doctor time. Each raises NvmlError on failure."""

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def driver_version(self) -> str: ...
    def nvml_version(self) -> str: ...
    def cuda_driver_version(self) -> int: ...          # e.g. 12040 for CUDA 12.4
    def device_count(self) -> int: ...
    def device_name(self, index: int) -> str: ...
    def device_memory_total_bytes(self, index: int) -> int: ...


class PynvmlLibrary:
    """The real NVML, through nvidia-ml-py's `pynvml` module (imported on first use, not at CLI start)."""

    def __init__(self, module: Any = None) -> None:
        self._pynvml = module          # a pynvml-like module (tests); None: import nvidia-ml-py's on first use

    def _call(self, name: str, *args):
        try:
            if self._pynvml is None:
                import pynvml

                self._pynvml = pynvml
            return getattr(self._pynvml, name)(*args)
        except ImportError as error:
            raise NvmlError(f"nvidia-ml-py is not installed ({error})") from None
        except Exception as error:  # noqa: BLE001 - pynvml.NVMLError and its many subclasses
            raise NvmlError(str(error) or type(error).__name__) from None

    def init(self) -> None:
        self._call("nvmlInit")

    def shutdown(self) -> None:
        self._call("nvmlShutdown")

    def driver_version(self) -> str:
        return _text(self._call("nvmlSystemGetDriverVersion"))

    def nvml_version(self) -> str:
        return _text(self._call("nvmlSystemGetNVMLVersion"))

    def cuda_driver_version(self) -> int:
        return int(self._call("nvmlSystemGetCudaDriverVersion"))

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount"))

    def device_name(self, index: int) -> str:
        return _text(self._call("nvmlDeviceGetName", self._call("nvmlDeviceGetHandleByIndex", index)))

    def device_memory_total_bytes(self, index: int) -> int:
        handle = self._call("nvmlDeviceGetHandleByIndex", index)
        return int(self._call("nvmlDeviceGetMemoryInfo", handle).total)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str | None
    memory_total_bytes: int | None


@dataclass(frozen=True)
class GpuReport:
    """The driver's answers; `error` says why NVML could not be used at all (None when it could)."""

    error: str | None
    driver_version: str | None = None
    nvml_version: str | None = None
    cuda_version: tuple[int, int] | None = None      # the newest CUDA the driver supports
    devices: tuple[GpuDevice, ...] = ()
    device_nodes: tuple[str, ...] = ()               # /dev/nvidia0 ... seen on the filesystem

    @property
    def has_gpu(self) -> bool:
        """An NVIDIA GPU is here: NVML lists one, or its device node exists (driver not loaded right)."""
        return bool(self.devices or self.device_nodes)


def _query(function, *args):
    try:
        return function(*args)
    except NvmlError:
        return None


def cuda_version_from_int(value: int | None) -> tuple[int, int] | None:
    """NVML's 12040 -> (12, 4)."""
    return (value // 1000, (value % 1000) // 10) if value else None


def device_nodes(dev: Path = Path("/dev")) -> tuple[str, ...]:
    """/dev/nvidia0, /dev/nvidia1 ...: present when the kernel driver sees GPUs, even if NVML fails."""
    return tuple(sorted(str(path) for path in dev.glob("nvidia[0-9]*")))


def read_gpus(nvml: Nvml, dev: Path = Path("/dev")) -> GpuReport:
    """Ask the driver what it has; never raises (a host without a driver gets a report with `error`)."""
    nodes = device_nodes(dev)
    try:
        nvml.init()
    except NvmlError as error:
        return GpuReport(error=str(error), device_nodes=nodes)
    try:
        count = _query(nvml.device_count) or 0
        devices = tuple(GpuDevice(index, _query(nvml.device_name, index),
                                  _query(nvml.device_memory_total_bytes, index)) for index in range(count))
        return GpuReport(error=None, driver_version=_query(nvml.driver_version),
                         nvml_version=_query(nvml.nvml_version),
                         cuda_version=cuda_version_from_int(_query(nvml.cuda_driver_version)),
                         devices=devices, device_nodes=nodes)
    finally:
        _query(nvml.shutdown)
