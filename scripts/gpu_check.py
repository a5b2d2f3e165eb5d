#!/usr/bin/env python3
"""Check baremetal's NVML path on a real GPU machine: readings, their cost, Xid event registration.

    python scripts/gpu_check.py [--samples 200] [--wait-xid-s 0]

Prints one JSON document: what NVML answered (each reading a value or null), which GPUs deliver Xid
events, the median cost of one full sample of every GPU and of draining the Xid event queue, and any
Xid events seen while waiting --wait-xid-s seconds. Needs only nvidia-ml-py (pynvml) and this checkout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baremetal.host.nvml import GpuMonitor  # noqa: E402


def timed_us(function, count: int) -> float:
    costs = []
    for _ in range(count):
        started = time.perf_counter()
        function()
        costs.append((time.perf_counter() - started) * 1e6)
    return statistics.median(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--wait-xid-s", type=float, default=0.0)
    args = parser.parse_args()
    monitor = GpuMonitor()
    started = monitor.start()
    report = {"nvml": monitor.reason, "driver_version": monitor.driver_version, "gpus": monitor.count,
              "xid_event_gpus": list(monitor.xid_gpus)}
    if started:
        report["sample_all_gpus_us_median"] = timed_us(monitor.sample, args.samples)
        report["drain_xid_events_us_median"] = timed_us(monitor.xid_events, args.samples)
        report["samples"] = [s.to_json() for s in monitor.sample()]
        deadline = time.monotonic() + args.wait_xid_s
        events = []
        while time.monotonic() < deadline:
            events += [e.to_json() for e in monitor.xid_events()]
            time.sleep(0.1)
        report["xid_events_seen"] = events
        monitor.close()
    print(json.dumps(report, indent=2))
    sys.exit(0 if started else 1)


if __name__ == "__main__":
    main()
