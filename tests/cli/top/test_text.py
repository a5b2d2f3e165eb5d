"""`top --once` as a user runs it without a terminal: one frame as text from the state files, the GPUs
through the NVML seam (the recording fake), the exit status; sparklines; bad usage."""

from __future__ import annotations

import json
import time

import pytest

from baremetal.cli.top.cells import sparkline, uptime_text
from tests.support.fake_nvml import FakeGpu, FakeNvml
from tests.support.lifecycle import program_toml, run, stack_toml


@pytest.mark.parametrize("values, kwargs, expected", [
    ((), {}, ""),
    ((0, 50, 100), {"per_char": 1, "top": 100.0}, "▁▅█"),
    ((10,) * 25, {"per_char": 10, "top": 100.0}, "▂▂▂"),            # the oldest character holds 5 values
    ((1, 2, 3, 4), {"per_char": 1}, "▃▅▆█"),                        # scaled to the largest shown
    ((0, 0), {"per_char": 1}, "▁▁"),
    (tuple(range(100)), {"per_char": 1, "width": 3, "top": 99.0}, "███"),   # only the newest `width`
])
def test_sparkline(values, kwargs, expected):
    assert sparkline(values, **kwargs) == expected


@pytest.mark.parametrize("seconds, text", [(None, "-"), (45, "45s"), (61, "1m"), (3599, "59m"), (3725, "1h2m")])
def test_uptime_changes_at_most_once_a_minute_after_the_first(seconds, text):
    assert uptime_text(seconds) == text


@pytest.fixture
def config(write_stack, short_tmp):
    serves = 'serves = { model = "chat", task = "chat", url = "http://127.0.0.1:9" }\ngpus = [0]'
    path = write_stack(stack_toml("once", [program_toml("chat-a", ["sleep", "1"], extra=serves),
                                           program_toml("web", ["sleep", "1"])]))
    run_dir = short_tmp / "state" / "run"
    logs = short_tmp / "state" / "logs"
    run_dir.mkdir(parents=True)
    logs.mkdir(parents=True)
    now_s = time.time()
    (run_dir / "cordon.json").write_text(json.dumps({"updated_s": now_s, "gpus": {"1": {
        "since_s": now_s, "reason": "Xid 79 (GPU has fallen off the bus)", "by": "watchdog"}}}))
    (logs / "events.jsonl").write_text(json.dumps({"time_s": now_s - 5, "kind": "restart", "program": "chat-a",
                                                   "message": "no progress for 3.0s; restarting (1/5 within 1h)"})
                                       + "\n")
    (logs / "chat-a.err.log").write_text("INFO loading\nINFO serving\n")
    return path


def test_once_prints_every_panel_and_exits_3_without_supervisord(config):
    nvml = FakeNvml([FakeGpu(name="NVIDIA H200", utilization_gpu=87, temperature_c=61, power_mw=450_000,
                             memory_used_bytes=70 << 30, memory_total_bytes=141 << 30, ecc_uncorrected_volatile=0),
                     FakeGpu(name="NVIDIA H200", uuid="GPU-1")])
    result = run("top", "--once", "--interval", "100ms", "-p", "chat-a", "-c", str(config), obj={"pynvml": nvml})
    assert result.exit_code == 3, result.output
    text = result.stdout
    assert "stack 'once' · supervisord: supervisord is not running" in text
    for section in ("PROGRAMS", "MODELS", "GPUS", "EVENTS", "LOG chat-a (stderr"):
        assert section in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(("chat-a ", "web "))}
    assert rows["chat-a"][1] == "?" and rows["web"][1] == "?"           # supervisord does not say
    gpu0 = next(line for line in text.splitlines() if line.startswith("0 "))
    assert "NVIDIA H200" in gpu0 and "87%" in gpu0 and "61 C" in gpu0 and "70.0G/141.0G" in gpu0 and "450/" in gpu0
    gpu1 = next(line for line in text.splitlines() if line.startswith("1 "))
    assert "Xid 79 (GPU has fallen off the bus)" in gpu1
    assert "restart" in text and "no progress for 3.0s" in text
    assert text.rstrip().endswith("INFO serving")
    assert "no gateway in this stack" in text
    assert not [call for call in nvml.calls if call[0] == "nvmlDeviceRegisterEvents"]


def test_once_without_gpus_says_so(config):
    result = run("top", "--once", "--interval", "100ms", "-c", str(config), obj={"pynvml": FakeNvml(init_error=12)})
    assert "no GPU: NVML not available: no NVIDIA driver on this host" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["top"], "needs a terminal"),
    (["top", "--once", "--interval", "10ms"], "at least 100ms"),
    (["top", "--once", "--interval", "soon"], "expected a duration"),
    (["top", "--once", "-p", "nope"], "no program named 'nope'"),
])
def test_bad_usage_exits_2(config, args, message):
    result = run(*args, "-c", str(config))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
