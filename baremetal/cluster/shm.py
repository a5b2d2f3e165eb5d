"""Stale shared-memory segments left by dead engines: found, checked against every live process, removed.

vLLM's shared-memory message queues (`psm_*` in /dev/shm, from multiprocessing.shared_memory) and its
torch.distributed rendezvous files (`vllm_dist_*` in the temp folder) stay behind when an engine is
killed; on a busy node they fill /dev/shm until the next engine fails to start. A segment is removed only
when no live process maps it or holds it open (compared by device and inode, so a process in another
mount namespace with its own /dev/shm never protects or loses a file it does not have), and only when it
is older than a grace period, so that an engine creating one right now keeps it.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

PATTERNS = ("psm_*", "vllm_dist_*")
DEFAULT_MIN_AGE_S = 60.0


@dataclass(frozen=True)
class Segment:
    """One candidate file; device and inode tell it apart from same-named files of other mount namespaces."""

    path: Path
    size_bytes: int
    modified_s: float           # seconds since the epoch
    device: int
    inode: int


def find_segments(folders: Iterable[Path], patterns: tuple[str, ...] = PATTERNS) -> list[Segment]:
    """Regular files in `folders` whose names match `patterns` (missing folders are skipped)."""
    found = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in patterns):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_file(follow_symlinks=False):
                found.append(Segment(Path(entry.path), info.st_size, info.st_mtime, info.st_dev, info.st_ino))
    return found


def files_in_use(proc: Path = Path("/proc")) -> set[tuple[int, int]]:
    """(device, inode) of every file some live process maps or holds open. Unreadable processes are skipped."""
    in_use: set[tuple[int, int]] = set()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        in_use |= _mapped(proc / pid / "maps")
        try:
            descriptors = os.listdir(proc / pid / "fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                info = os.stat(proc / pid / "fd" / descriptor)
            except OSError:
                continue
            in_use.add((info.st_dev, info.st_ino))
    return in_use


def _mapped(maps: Path) -> set[tuple[int, int]]:
    """(device, inode) of the file-backed mappings in one /proc/PID/maps."""
    found = set()
    try:
        text = maps.read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or parts[4] == "0":
            continue
        major, _, minor = parts[3].partition(":")
        try:
            found.add((os.makedev(int(major, 16), int(minor, 16)), int(parts[4])))
        except ValueError:
            continue
    return found


def stale_segments(segments: Iterable[Segment], in_use: set[tuple[int, int]], now_s: float,
                   min_age_s: float = DEFAULT_MIN_AGE_S) -> list[Segment]:
    """The segments no process uses and nobody touched for `min_age_s`. Pure."""
    return [segment for segment in segments
            if (segment.device, segment.inode) not in in_use and now_s - segment.modified_s >= min_age_s]


def clean(folders: Iterable[Path], now_s: float, min_age_s: float = DEFAULT_MIN_AGE_S, dry_run: bool = False,
          proc: Path = Path("/proc")) -> list[Segment]:
    """Remove (or with `dry_run` only list) the stale segments in `folders`; returns them."""
    candidates = find_segments(folders)
    if not candidates:
        return []
    stale = stale_segments(candidates, files_in_use(proc), now_s, min_age_s)
    removed = []
    for segment in stale:
        if not dry_run:
            try:
                segment.path.unlink()
            except FileNotFoundError:
                continue
            except OSError:
                continue
        removed.append(segment)
    return removed
