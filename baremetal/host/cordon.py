"""Cordoned GPUs: <root>/run/cordon.json, the list of GPUs no program of the stack is started on again.

The watchdog adds a GPU when it finds it bad (a fatal Xid, uncorrectable ECC errors, failed row
remapping, memory held after every process of ours is gone); `baremetal uncordon GPU` removes it. The
plan, `status`, `gpus` and `top` read it. The file:

    {"updated_s": 1764583200.1, "gpus": {"0": {"since_s": ..., "reason": "Xid 79 (GPU has fallen off the bus)",
                                            "uuid": "GPU-...", "by": "watchdog", "reset": null}}}

Writers take a lock (the watchdog and an operator's `uncordon` may write at once); readers tolerate a
missing or damaged file (nothing cordoned) and unknown keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from baremetal.host.files import atomic_write

CORDON_FILE = "cordon.json"


@dataclass(frozen=True)
class Cordon:
    """One cordoned GPU, by its index as NVML and nvidia-smi number it."""

    gpu: int
    since_s: float
    reason: str
    uuid: str | None = None
    by: str = "watchdog"
    reset: str | None = None        # what a GPU reset (watchdog.gpu_reset) did, if one was tried

    def to_json(self) -> dict:
        data = asdict(self)
        del data["gpu"]
        return data


def cordon_path(run_dir: Path) -> Path:
    """Where a stack keeps its cordoned GPUs (<root>/run/cordon.json)."""
    return Path(run_dir) / CORDON_FILE


def read_cordons(path: Path) -> dict[int, Cordon]:
    """The cordoned GPUs by index; {} when there is no file or it cannot be read."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = document.get("gpus") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    found: dict[int, Cordon] = {}
    for key, entry in entries.items() if isinstance(entries, dict) else ():
        try:
            gpu = int(key)
            found[gpu] = Cordon(gpu=gpu, since_s=float(entry.get("since_s") or 0.0),
                                reason=str(entry.get("reason") or "cordoned"), uuid=entry.get("uuid"),
                                by=str(entry.get("by") or "watchdog"), reset=entry.get("reset"))
        except (TypeError, ValueError, AttributeError):
            continue
    return found


def cordoned_gpus(path: Path) -> frozenset[int]:
    """Just the indices (what the plan needs)."""
    return frozenset(read_cordons(path))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _change(path: Path, change: Callable[[dict[int, Cordon]], dict[int, Cordon]],
            clock: Callable[[], float]) -> dict[int, Cordon]:
    with _locked(Path(path)):
        before = read_cordons(path)
        after = change(dict(before))
        if after != before:
            document = {"updated_s": round(clock(), 3),
                        "gpus": {str(gpu): entry.to_json() for gpu, entry in sorted(after.items())}}
            atomic_write(Path(path), json.dumps(document, indent=1) + "\n", mode=0o644)
        return after


def cordon(path: Path, gpu: int, reason: str, uuid: str | None = None, by: str = "watchdog",
           clock: Callable[[], float] = time.time) -> bool:
    """Cordon `gpu` (a GPU already cordoned keeps its first reason); True when it was not cordoned before."""
    added = []

    def change(entries: dict[int, Cordon]) -> dict[int, Cordon]:
        if gpu not in entries:
            entries[gpu] = Cordon(gpu=gpu, since_s=round(clock(), 3), reason=reason, uuid=uuid, by=by)
            added.append(gpu)
        return entries
    _change(path, change, clock)
    return bool(added)


def uncordon(path: Path, gpus: list[int], clock: Callable[[], float] = time.time) -> list[Cordon]:
    """Remove `gpus` from the file; the entries that were there."""
    removed: list[Cordon] = []

    def change(entries: dict[int, Cordon]) -> dict[int, Cordon]:
        removed.extend(entries.pop(gpu) for gpu in gpus if gpu in entries)
        return entries
    _change(path, change, clock)
    return removed


def note_reset(path: Path, gpu: int, outcome: str, clock: Callable[[], float] = time.time) -> None:
    """Record what a GPU reset of a cordoned GPU did (it stays cordoned until an operator uncordons it)."""
    def change(entries: dict[int, Cordon]) -> dict[int, Cordon]:
        if gpu in entries:
            old = entries[gpu]
            entries[gpu] = Cordon(old.gpu, old.since_s, old.reason, old.uuid, old.by, outcome)
        return entries
    _change(path, change, clock)
