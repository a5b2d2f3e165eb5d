"""Recording fakes for the install seams (subprocess, NVML): they keep every call and answer from a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from baremetal.install.nvidia import NvmlError
from baremetal.install.runner import CommandResult


@dataclass
class RecordingRunner:
    """A fake runner for tests: records (argv, environment) and answers from `answers`.

    `answers` maps a substring of the joined argv to a CommandResult (the first match wins); any other
    command succeeds with no output.
    """

    answers: dict[str, CommandResult] = field(default_factory=dict)
    calls: list[tuple[tuple[str, ...], dict[str, str]]] = field(default_factory=list)

    def run(self, argv: Sequence[str], environment: Mapping[str, str] | None = None,
            on_line: Callable | None = None, on_tick: Callable | None = None,
            timeout_s: float | None = None) -> CommandResult:
        self.calls.append((tuple(argv), dict(environment or {})))
        joined = " ".join(argv)
        for key, result in self.answers.items():
            if key in joined:
                for line in result.lines:
                    if on_line:
                        on_line(line)
                return result
        return CommandResult(0, ())

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [argv for argv, _ in self.calls]


@dataclass
class FakeNvml:
    """NVML as a table: `answers` maps a method name to its value, or to an NvmlError to raise."""

    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, tuple]] = field(default_factory=list)

    def _answer(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        value = self.answers.get(name)
        if isinstance(value, NvmlError):
            raise value
        if callable(value):
            return value(*args)
        return value

    def init(self) -> None:
        self._answer("init")

    def shutdown(self) -> None:
        self._answer("shutdown")

    def driver_version(self) -> str:
        return self._answer("driver_version")

    def nvml_version(self) -> str:
        return self._answer("nvml_version")

    def cuda_driver_version(self) -> int:
        return self._answer("cuda_driver_version")

    def device_count(self) -> int:
        return self._answer("device_count")

    def device_name(self, index: int) -> str:
        return self._answer("device_name", index)

    def device_memory_total_bytes(self, index: int) -> int:
        return self._answer("device_memory_total_bytes", index)


def h100_nvml(count: int = 2) -> FakeNvml:
    """A driver that answers like an H100 host, with fan speed-style NotSupported where it matters."""
    return FakeNvml({"driver_version": "580.95.05", "nvml_version": "13.580.95.05", "cuda_driver_version": 13000,
                     "device_count": count, "device_name": lambda index: "NVIDIA H100 80GB HBM3",
                     "device_memory_total_bytes": lambda index: 85520809984})


def no_driver_nvml() -> FakeNvml:
    return FakeNvml({"init": NvmlError("NVML Shared Library Not Found")})
