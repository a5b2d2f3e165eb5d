"""Stale shared-memory segments: real files, real processes mapping or holding them, removed only when
nobody uses them and they are old enough."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from baremetal.cluster import shm
from tests.support.waiting import wait_for

HOLD = """
import mmap, sys, time
path, how = sys.argv[1], sys.argv[2]
handle = open(path, "r+b")
if how == "map":
    view = mmap.mmap(handle.fileno(), 4096)
    handle.close()
print("ready", flush=True)
time.sleep(600)
"""


def segment(folder: Path, name: str, age_s: float = 3600) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * 4096)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


@pytest.fixture
def holders():
    started = []

    def hold(path: Path, how: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(path), how], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        started.append(process)
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


def test_only_unused_old_segments_are_removed(tmp_path, holders):
    dead = segment(tmp_path, "psm_dead01")
    mapped = segment(tmp_path, "psm_mapped")
    opened = segment(tmp_path, "vllm_dist_abc")
    young = segment(tmp_path, "psm_young", age_s=1)
    other = segment(tmp_path, "my_data")                 # not a pattern baremetal owns
    holders(mapped, "map")                                # unmapped on close: only the mapping keeps it
    holders(opened, "open")
    removed = shm.clean([tmp_path, tmp_path / "missing"], time.time(), min_age_s=60)
    assert [s.path for s in removed] == [dead]
    assert not dead.exists() and mapped.exists() and opened.exists() and young.exists() and other.exists()


def test_dry_run_removes_nothing(tmp_path):
    dead = segment(tmp_path, "psm_dead02")
    assert [s.path for s in shm.clean([tmp_path], time.time(), dry_run=True)] == [dead]
    assert dead.exists()


def test_a_segment_is_freed_once_its_process_is_gone(tmp_path, holders):
    path = segment(tmp_path, "psm_engine")
    engine = holders(path, "map")
    assert shm.clean([tmp_path], time.time()) == []
    engine.kill()
    engine.wait()
    wait_for(lambda: shm.clean([tmp_path], time.time()), 10, what="segment removed after its engine died")
    assert not path.exists()


def test_stale_segments_is_pure():
    one = shm.Segment(Path("/dev/shm/psm_a"), 10, 100.0, 1, 11)
    two = shm.Segment(Path("/dev/shm/psm_b"), 10, 190.0, 1, 12)
    three = shm.Segment(Path("/dev/shm/psm_c"), 10, 100.0, 1, 13)
    assert shm.stale_segments([one, two, three], {(1, 13)}, now_s=200.0, min_age_s=60) == [one]
