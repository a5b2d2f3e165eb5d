"""events and gpus through the CLI, as an operator runs them (the watchdog loop itself: tests/watchdog/test_loop_real.py)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from baremetal.cli import cli
from baremetal.config import load_stack
from baremetal.watchdog.events import Event, EventLog, events_path
from tests.support.fake_nvml import NVML_ERROR_LIBRARY_NOT_FOUND, FakeGpu, FakeNvml

NO_DRIVER = {"pynvml": FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND)}     # a host without a GPU


def run(*args: str, obj: dict | None = None):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, obj=obj)


def test_gpus_without_a_driver_says_so_and_exits_1():
    result = run("gpus", obj=dict(NO_DRIVER))
    assert result.exit_code == 1
    assert "No GPUs to show: NVML not available: no NVIDIA driver on this host" in result.output
    assert "Traceback" not in result.output


def test_gpus_json_without_a_driver():
    result = run("gpus", "--json", obj=dict(NO_DRIVER))
    assert result.exit_code == 1 and result.stderr == ""
    document = json.loads(result.stdout)
    assert document["gpus"] == [] and document["nvml"].startswith("NVML not available")


def test_gpus_on_a_host_with_a_gpu():
    result = run("gpus", "--json", obj={"pynvml": FakeNvml([FakeGpu(temperature_c=44)])})
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [gpu["temperature_c"] for gpu in document["gpus"]] == [44] and document["nvml"] is None


def test_events_shows_the_newest_first_filtered_and_as_json(write_stack):
    stack_file = write_stack('[stack]\nname = "ev"\nroot = "state"\n[api]\nkind = "none"\n')
    root = load_stack(stack_file).root
    empty = run("events", "-c", str(stack_file))
    assert empty.exit_code == 0 and "No watchdog events yet" in empty.output
    empty_json = run("events", "--json", "-c", str(stack_file))
    assert empty_json.exit_code == 0 and empty_json.stdout == ""          # JSON lines: none
    notice = json.loads(empty_json.stderr)
    assert notice["events"] == 0 and notice["path"] == str(events_path(root)) and "No watchdog events" in notice["message"]
    log = EventLog(events_path(root))
    for number in range(5):
        log.write(Event(1_800_000_000.0 + number, "ready", f"ready after {number}s", "web"))
    log.write(Event(1_800_000_010.0, "restart", "3 probes failed in a row", "vllm-chat", {"log_tail": {}}))
    result = run("events", "-c", str(stack_file), "-n", "2")
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and "ready after 4s" in lines[0] and "vllm-chat" in lines[1] and "restart" in lines[1]
    only_web = run("events", "-c", str(stack_file), "-p", "web", "-n", "50").output.strip().splitlines()
    assert len(only_web) == 5 and all("web" in line for line in only_web)
    as_json = [json.loads(line) for line in run("events", "-c", str(stack_file), "--json", "-n", "1").output.splitlines()]
    assert as_json[0]["kind"] == "restart" and as_json[0]["log_tail"] == {}


def test_gpu_table_row_shows_readings_and_dashes_for_what_nvml_did_not_say():
    from baremetal.cli.status_view import gpu_row
    from baremetal.host.nvml import GpuProcess, GpuSample

    full = GpuSample(index=0, time_s=0, name="NVIDIA H100 80GB HBM3", temperature_c=45, memory_used_bytes=3 << 30,
                     memory_total_bytes=80 << 30, utilization_gpu_percent=97, power_w=312.4, power_limit_w=700.0,
                     ecc_uncorrected_volatile=0, throttle_reasons=("gpu_idle", "hw_thermal"),
                     processes=(GpuProcess(4242, 2 << 30),))
    assert gpu_row(full.to_json(), {4242: "vllm-chat"}) == ["0", "NVIDIA H100 80GB HBM3", "45 C", "3.0/80.0 GiB", "97%",
                                                   "312/700 W", "0", "hw_thermal", "4242(vllm-chat) 2.0G"]
    assert gpu_row(GpuSample(index=1, time_s=0).to_json(), {}) == ["1", "-", "-", "-/-", "-", "-/-", "-", "-", "-"]
