"""The watchdog's state file, <root>/run/watchdog.json, rewritten atomically every tick.

This is a contract with the gateway and `baremetal status`:

    {"updated_s": epoch, "pid": N, "interval_s": 1.0, "nvml": null | "why GPUs are not watched",
     "programs": {PROGRAM: {"phase": "loading|ready|stuck|restarting|failed|given_up|hardware_fault|stopped",
                            "healthy": bool, "reason": "...", "restarts": N, "last_restart_s": epoch | null,
                            ...more keys that readers may ignore}},
     "gpus": [GpuSample.to_json(), ...],
     "nodes": [NodeState as a dict, ...]}           # only on the head of a [cluster]

On a cluster's head, "programs" also holds the models on other nodes that the head probes, with
"remote": true and their "node"; the gateway routes around those that are not healthy.

`phase` "stopped" means stopped on purpose by an operator. `restarts` counts every restart seen since the
watchdog first ran (by the watchdog, or by supervisord after an exit). A file whose `updated_s` is older
than a few intervals means the watchdog itself is not running: `read_state` says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from baremetal.host.files import atomic_write

PHASES = ("loading", "ready", "stuck", "restarting", "failed", "given_up", "hardware_fault", "stopped")
STALE_AFTER_INTERVALS = 5


def write_state(path: Path, programs: dict[str, dict], gpus: list[dict], now_s: float, interval_s: float,
                nvml: str | None, nodes: list[dict] | None = None) -> None:
    """Replace the state file in one step (readers see the old or the new, never half). `nodes`: a cluster
    head's view of every node."""
    document = {"updated_s": round(now_s, 3), "pid": os.getpid(), "interval_s": interval_s, "nvml": nvml,
                "programs": programs, "gpus": gpus}
    if nodes is not None:
        document["nodes"] = nodes
    atomic_write(Path(path), json.dumps(document, default=str, separators=(",", ":")), durable=False)


def read_state(path: Path, now_s: float | None = None) -> dict[str, Any] | None:
    """The state document, or None when there is none or it cannot be read. With `now_s`, adds
    "stale": true when the watchdog has not written it for STALE_AFTER_INTERVALS intervals."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    if now_s is not None:
        interval_s = float(document.get("interval_s") or 1.0)
        document["stale"] = now_s - float(document.get("updated_s", 0)) > STALE_AFTER_INTERVALS * max(interval_s, 1.0)
    return document
