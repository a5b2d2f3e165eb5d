#!/usr/bin/env python3
"""What `baremetal top` costs while it runs: CPU per second of its process, side by side with `status
--watch` and with the watchdog, on one real stack.

Starts a throwaway stack under real supervisord (`baremetal up`): four [[program]] upstreams (the gateway
tests' OpenAI-style server) serving two models, an idle program, the real gateway and the real watchdog.
Then, in each round, in a real terminal (tmux, 200x50), for --seconds each, after a settling second:
  top, idle            `baremetal top`, no traffic, this host's GPUs (none here: the "no GPU" line)
  top, busy            `baremetal top` while a client sends ~20 requests/s through the gateway, with
                       --gpus fake GPUs whose readings change at every sample (as a busy GPU host's do)
  status --watch, busy `baremetal status --watch --interval 1s`, same traffic
and the watchdog's own CPU over the "top, busy" window. The CPU is the process's user+system time
(psutil) over the wall time. It also times, in this process, one refresh's reading and frame building.

    .venv/bin/python scripts/bench_top.py [--rounds 3] [--seconds 20] [--gpus 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402

from tests.support.fake_nvml import FakeGpu, FakeNvml  # noqa: E402
from tests.support.upstream_stack import upstream_stack_toml  # noqa: E402

KEY = "bench-top-key-0123456789"


class BusyNvml(FakeNvml):
    """The recording fake, with utilisation, temperature and power changing at every reading."""

    def nvmlDeviceGetUtilizationRates(self, handle):
        gpu = self._gpu(handle)
        gpu.utilization_gpu = random.randint(60, 100)
        return super().nvmlDeviceGetUtilizationRates(handle)

    def nvmlDeviceGetPowerUsage(self, handle):
        self._gpu(handle).power_mw = random.randint(300_000, 700_000)
        return super().nvmlDeviceGetPowerUsage(handle)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        self._gpu(handle).temperature_c = random.randint(55, 75)
        return super().nvmlDeviceGetTemperature(handle, sensor)


class _Discard(list):
    """A list that keeps nothing: the fake's record of calls would grow through a long run."""

    def append(self, _item) -> None:
        pass


def child_top(config: str, gpus: int) -> None:
    """Run `baremetal top` here, with `gpus` busy fake GPUs behind the CLI's NVML seam."""
    from baremetal.cli import cli

    nvml = BusyNvml([FakeGpu(name="NVIDIA H200", uuid=f"GPU-{index}", memory_total_bytes=141 << 30)
                     for index in range(gpus)])
    nvml.calls = _Discard()
    cli.main(["top", "-c", config], prog_name="baremetal", obj={"pynvml": nvml} if gpus else {})


def write_stack(folder: Path) -> Path:
    """Four upstreams serving two models, the gateway, the watchdog and an idle program."""
    config = folder / "baremetal.toml"
    config.write_text(upstream_stack_toml("benchtop", KEY, [(f"up-{index}", "chat" if index % 2 == 0 else "chat-large")
                                                            for index in range(4)]))
    return config


class Traffic:
    """About `per_s` chat requests a second through the gateway (every other one streamed)."""

    def __init__(self, url: str, per_s: float = 20.0):
        self.url, self.per_s = url, per_s
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as client:
            while not self._stop.wait(1 / self.per_s):
                body = {"model": random.choice(["chat", "chat-large"]), "stream": self.sent % 2 == 0,
                        "messages": [{"role": "user", "content": "hi"}]}
                client.post(f"{self.url}/v1/chat/completions", json=body).raise_for_status()
                self.sent += 1

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def cpu_percent(process: psutil.Process, seconds: float) -> float:
    """CPU of `process` (user + system) over `seconds` of wall time, as % of one core."""
    before, started = process.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after, ended = process.cpu_times(), time.monotonic()
    return 100 * ((after.user + after.system) - (before.user + before.system)) / (ended - started)


def in_tmux(argv: list[str], socket: str) -> psutil.Process:
    """Start argv in a detached 200x50 tmux session; the process itself (not tmux's shell)."""
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-s", "bench", "-x", "200", "-y", "50",
                    " ".join(argv)], check=True, env=dict(os.environ, TERM="xterm-256color"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            if process.info["cmdline"] == argv:
                return process
        time.sleep(0.1)
    raise SystemExit(f"{argv} did not start in tmux")


SESSIONS = iter(range(1_000_000))


def measure(argv: list[str], seconds: float, settle_s: float, watchdog: psutil.Process | None = None):
    """CPU % of argv run in a terminal (and of the watchdog over the same window, when given)."""
    socket = f"bench-top-{os.getpid()}-{next(SESSIONS)}"     # a tmux server of its own each time
    try:
        process = in_tmux(argv, socket)
        time.sleep(settle_s)
        if watchdog is None:
            return cpu_percent(process, seconds), None
        watchdog_before = watchdog.cpu_times()
        value = cpu_percent(process, seconds)
        watchdog_after = watchdog.cpu_times()
        return value, 100 * ((watchdog_after.user + watchdog_after.system)
                             - (watchdog_before.user + watchdog_before.system)) / seconds
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


def frame_cost_ms(config: Path, frames: int = 200) -> float:
    """CPU per refresh of reading every source and building the frame, in this process (ms)."""
    from baremetal.cli.top.builder import FrameBuilder
    from baremetal.cli.top.sources import NodeReader
    from baremetal.config import load_stack
    from baremetal.plan.pipeline import known_specs

    stack = load_stack(config)
    nvml = BusyNvml([FakeGpu() for _ in range(8)])
    nvml.calls = _Discard()
    reader = NodeReader(stack, nvml=nvml)
    builder = FrameBuilder(stack.stack.name, known_specs(stack), stack.watchdog.interval_s, True)
    reader.selected = ("up-0", None)
    samples = []
    for _ in range(frames):
        started = resource.getrusage(resource.RUSAGE_SELF)
        builder.build(reader.read())
        ended = resource.getrusage(resource.RUSAGE_SELF)
        samples.append(1000 * ((ended.ru_utime + ended.ru_stime) - (started.ru_utime + started.ru_stime)))
    reader.close()
    return statistics.median(samples)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}% ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--child-top", metavar="CONFIG", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child_top:
        child_top(options.child_top, options.gpus)
        return
    if not shutil.which("tmux"):
        raise SystemExit("tmux is needed (apt-get install tmux)")
    folder = Path(tempfile.mkdtemp(prefix="bm-bench-top-", dir="/tmp"))
    config = write_stack(folder)
    baremetal = [sys.executable, "-m", "baremetal"]
    try:
        done = subprocess.run(baremetal + ["up", "--timeout", "60s", "-c", str(config)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"up failed:\n{done.stdout}{done.stderr}")
        status = json.loads(subprocess.run(baremetal + ["status", "--json", "-c", str(config)], capture_output=True,
                                           text=True).stdout)
        watchdog = psutil.Process(next(row["pid"] for row in status["programs"] if row["name"] == "watchdog"))
        port = next(row["port"] for row in status["programs"] if row["name"] == "api")
        results: dict[str, list[float]] = {"top, idle": [], "top, busy": [], "status --watch, busy": [],
                                           "the watchdog (same window)": []}
        top = [sys.executable, str(Path(__file__).resolve()), "--child-top", str(config), "--gpus"]
        for round_number in range(options.rounds):
            results["top, idle"].append(measure(top + ["0"], options.seconds, 3)[0])
            with Traffic(f"http://127.0.0.1:{port}") as traffic:
                value, watchdog_cpu = measure(top + [str(options.gpus)], options.seconds, 3, watchdog)
                results["top, busy"].append(value)
                results["the watchdog (same window)"].append(watchdog_cpu)
                results["status --watch, busy"].append(measure(baremetal + ["status", "--watch", "--interval", "1s",
                                                                            "-c", str(config)], options.seconds, 3)[0])
            print(f"round {round_number + 1}: " + ", ".join(f"{name} {values[-1]:.2f}%" for name, values in
                                                             results.items()) + f" ({traffic.sent} requests)",
                  flush=True)
        cost_ms = frame_cost_ms(config)
    finally:
        subprocess.run(baremetal + ["down", "-c", str(config)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{options.rounds} rounds of {options.seconds:.0f} s, refresh every 1 s; CPU as % of one core, "
          f"median (min-max); busy: ~20 requests/s, {options.gpus} GPUs whose readings change\n")
    print(f"| {'process':<28} | CPU |\n| --- | --- |")
    for name, values in results.items():
        print(f"| {name:<28} | {summary(values)} |")
    top_busy = statistics.median(results["top, busy"])
    print(f"\ntop busy / status --watch busy: {top_busy / statistics.median(results['status --watch, busy']):.2f}; "
          f"top busy / the watchdog: {top_busy / statistics.median(results['the watchdog (same window)']):.2f}")
    print(f"one refresh's reading and frame building, in process: {cost_ms:.2f} ms CPU (median of 200)")


if __name__ == "__main__":
    main()
