"""GPU sampling through the NVML seam (a recording fake: this host has no GPU)."""

from __future__ import annotations

from pathlib import Path

from baremetal.host.nvml import GpuMonitor, GpuSample
from tests.support.fake_nvml import NVML_ERROR_LIBRARY_NOT_FOUND, FakeGpu, FakeNvml


def started(nvml: FakeNvml) -> GpuMonitor:
    monitor = GpuMonitor(nvml=nvml, clock=lambda: 1000.0)
    assert monitor.start(), monitor.reason
    return monitor


def test_sample_reads_every_gpu_with_units():
    nvml = FakeNvml([FakeGpu(temperature_c=41, power_mw=312_500, throttle_mask=0x4 | 0x40,
                             processes=[(4242, 30 << 30)]),
                     FakeGpu(uuid="GPU-1", remapped_rows=(2, 1, 1, 0))])
    first, second = started(nvml).sample()
    assert first.index == 0 and first.temperature_c == 41 and first.memory_total_bytes == 80 << 30
    assert first.power_w == 312.5 and first.power_limit_w == 700.0
    assert first.throttle_reasons == ("sw_power_cap", "hw_thermal")
    assert [(p.pid, p.memory_used_bytes) for p in first.processes] == [(4242, 30 << 30)]
    assert first.fan_speed_percent is None and first.retired_pages_pending is None   # NotSupported on H100
    assert (second.uuid, second.remapped_rows_correctable, second.remapped_rows_uncorrectable,
            second.remap_pending, second.remap_failure) == ("GPU-1", 2, 1, True, False)


def test_not_supported_everywhere_gives_none_never_an_exception():
    nvml = FakeNvml([FakeGpu(), FakeGpu()], not_supported={"*"})
    monitor = started(nvml)
    samples = monitor.sample()
    assert [s.index for s in samples] == [0, 1]
    empty = GpuSample(index=1, time_s=1000.0)
    assert samples[1] == empty
    assert monitor.xid_events() == [] and monitor.xid_gpus == ()
    assert any(call[0] == "nvmlDeviceGetTotalEccErrors" for call in nvml.calls)


def test_a_query_that_answers_not_supported_is_not_asked_again():
    nvml = FakeNvml([FakeGpu(), FakeGpu()])
    monitor = started(nvml)
    for _ in range(3):
        samples = monitor.sample()
    assert samples[0].fan_speed_percent is None and samples[1].temperature_c == 35
    fan_calls = [call for call in nvml.calls if call[0] == "nvmlDeviceGetFanSpeed"]
    assert fan_calls == [("nvmlDeviceGetFanSpeed", 0), ("nvmlDeviceGetFanSpeed", 1)]       # once per GPU
    assert sum(call[0] == "nvmlDeviceGetTemperature" for call in nvml.calls) == 6


def test_no_driver_is_said_in_words():
    monitor = GpuMonitor(nvml=FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND))
    assert monitor.start() is False and not monitor.available
    assert "no NVIDIA driver" in monitor.reason and "libnvidia-ml.so.1" in monitor.reason
    assert monitor.sample() == [] and monitor.xid_events() == []


def test_real_pynvml_agrees_with_the_host():
    """The real nvidia-ml-py: GPUs where the driver's device node exists, else a reason in words."""
    monitor = GpuMonitor()
    try:
        if Path("/dev/nvidiactl").exists():
            assert monitor.start() is True and monitor.count >= 1, monitor.reason
            assert all(sample.memory_total_bytes for sample in monitor.sample())
        else:
            assert monitor.start() is False
            assert monitor.reason.startswith("NVML not available")
    finally:
        monitor.close()


def test_xid_events_are_received_per_gpu_and_classified():
    nvml = FakeNvml([FakeGpu(), FakeGpu(uuid="GPU-b", supports_events=True), FakeGpu(supports_events=False)])
    monitor = started(nvml)
    assert monitor.xid_gpus == (0, 1)
    nvml.queue_xid(1, 79)
    nvml.queue_xid(0, 13)
    nvml.queue_xid(2, 48)            # that GPU cannot report events: never seen
    events = monitor.xid_events()
    assert [(e.gpu_index, e.xid, e.hardware) for e in events] == [(1, 79, True), (0, 13, False)]
    assert events[0].uuid == "GPU-b" and "fallen off the bus" in events[0].description
    assert monitor.xid_events() == []
    assert all(call[2] == 0 for call in nvml.calls if call[0] == "nvmlEventSetWait_v2")   # never waits


def test_close_frees_the_event_set_and_nvml():
    nvml = FakeNvml()
    monitor = started(nvml)
    monitor.close()
    assert [c[0] for c in nvml.calls[-2:]] == ["nvmlEventSetFree", "nvmlShutdown"]
    assert monitor.sample() == []
