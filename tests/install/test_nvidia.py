"""Reading the NVIDIA driver through the NVML seam: every failure becomes a value, never an exception."""

from __future__ import annotations

from baremetal.install.nvidia import GpuDevice, NvmlError, PynvmlLibrary, cuda_version_from_int, read_gpus
from tests.install.fakes import FakeNvml, h100_nvml, no_driver_nvml


def test_h100_host_report(short_tmp):
    report = read_gpus(h100_nvml(2), dev=short_tmp)
    assert report.error is None and report.has_gpu
    assert report.driver_version == "580.95.05" and report.cuda_version == (13, 0)
    assert report.devices == (GpuDevice(0, "NVIDIA H100 80GB HBM3", 85520809984),
                              GpuDevice(1, "NVIDIA H100 80GB HBM3", 85520809984))


def test_no_driver_is_a_report_not_an_exception(short_tmp):
    nvml = no_driver_nvml()
    report = read_gpus(nvml, dev=short_tmp)
    assert report.error == "NVML Shared Library Not Found" and not report.has_gpu
    assert [name for name, _ in nvml.calls] == ["init"]           # nothing else asked, no shutdown needed


def test_not_supported_queries_become_none_and_nvml_is_shut_down(short_tmp):
    nvml = FakeNvml({"device_count": 1, "device_name": NvmlError("Not Supported"),
                     "device_memory_total_bytes": 1024, "driver_version": NvmlError("Not Supported")})
    report = read_gpus(nvml, dev=short_tmp)
    assert report.devices == (GpuDevice(0, None, 1024),) and report.driver_version is None
    assert nvml.calls[-1] == ("shutdown", ())


def test_device_nodes_count_as_a_gpu_even_when_nvml_fails(short_tmp):
    (short_tmp / "nvidia0").touch()
    (short_tmp / "nvidiactl").touch()
    report = read_gpus(no_driver_nvml(), dev=short_tmp)
    assert report.has_gpu and report.device_nodes == (str(short_tmp / "nvidia0"),)


def test_cuda_version_numbers():
    assert cuda_version_from_int(12040) == (12, 4) and cuda_version_from_int(13000) == (13, 0)
    assert cuda_version_from_int(None) is None


def test_real_nvml_on_this_host_never_raises():
    """The real library path: on a host without a driver it reports why; on a GPU host it lists the GPUs."""
    report = read_gpus(PynvmlLibrary())
    assert (report.error is None) == bool(report.devices) or report.device_nodes
