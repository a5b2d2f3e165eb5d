"""Evidence folders from real processes: py-spy reads a running and a SIGSTOPped Python process, the
parts land in a 0700 folder, a slow part cannot hold the stop back, old folders are pruned."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import psutil
import pytest

from baremetal.watchdog.evidence import Collector, Request, find_py_spy, folder_for, folders, prune
from tests.support.waiting import wait_for

TARGET = '''
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time\\ndef waiting_for_work():\\n    time.sleep(600)\\nwaiting_for_work()"])
def serving_forever():
    while True:
        time.sleep(0.05)
print(child.pid, flush=True)
serving_forever()
'''


class Http:
    """Answers the metrics request like a vLLM server whose engine is frozen."""

    def __init__(self):
        self.asked = []

    def get(self, url, timeout):
        self.asked.append((url, timeout))
        return type("Answer", (), {"status_code": 200, "text": "vllm:num_requests_running 1.0\n"})()


@pytest.fixture
def target():
    process = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
    child = int(process.stdout.readline())
    yield process, child
    os.kill(child, signal.SIGKILL)
    process.kill()
    process.wait()


def request(root, pid, **kw):
    return Request(program="web", folder=folder_for(root, "web", time.time()), pid=pid, reason="no progress",
                   time_s=time.time(), hang={"kind": "stopped_by_signal", "words": "stopped by a signal",
                                             "detail": "x"}, **kw)


def test_stacks_of_every_process_running_and_stopped(tmp_path, target):
    assert find_py_spy(), "py-spy is installed with baremetal (setup.cfg)"
    process, child = target
    wait_for(lambda: psutil.Process(child).status() == psutil.STATUS_SLEEPING, 10, what="child in its sleep")
    os.kill(child, signal.SIGSTOP)
    log = tmp_path / "web.err.log"
    log.write_text("".join(f"line {n}\n" for n in range(500)))
    http = Http()
    result = Collector(http).collect(request(tmp_path, process.pid, metrics_url="http://127.0.0.1:1/metrics",
                                             log_files=(log,), probes=({"probe_ok": False},)))
    folder = result.folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert result.processes == 2 and result.stacks_ok == 2, (folder / "stacks.txt").read_text()
    stacks = (folder / "stacks.txt").read_text()
    assert "serving_forever" in stacks and "waiting_for_work" in stacks
    assert f"=== {child} (" in stacks and "state stopped" in stacks
    assert result.elapsed_s < 3.0
    assert "vllm:num_requests_running 1.0" in (folder / "metrics.txt").read_text()
    tail = (folder / "log-tail.txt").read_text()
    assert "line 499" in tail and "line 299" not in tail
    assert json.loads((folder / "probes.json").read_text()) == [{"probe_ok": False}]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["program"] == "web" and summary["hang"]["kind"] == "stopped_by_signal"
    assert [p["stack"] for p in summary["processes"]] == [True, True] and summary["seconds"] < 3.0
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in folder.iterdir())


def test_a_hanging_dump_cannot_hold_the_restart_back(tmp_path, target):
    process, _child = target

    def never_answers(argv, timeout_s):
        time.sleep(30)
        return 0, ""

    started = time.monotonic()
    result = Collector(Http(), run=never_answers, py_spy="/bin/py-spy", budget_s=1.0).collect(
        request(tmp_path, process.pid))
    assert time.monotonic() - started < 2.5
    assert result.stacks_ok == 0 and "(no dump within 1s)" in (result.folder / "stacks.txt").read_text()


def test_without_py_spy_the_rest_is_still_kept(tmp_path, target):
    process, _child = target
    collector = Collector(Http(), py_spy="")
    collector.py_spy = None
    result = collector.collect(request(tmp_path, process.pid))
    assert "py-spy is not installed" in (result.folder / "stacks.txt").read_text()
    assert (result.folder / "summary.json").exists() and (result.folder / "nvml.txt").exists()


def test_prune_keeps_the_newest(tmp_path):
    made = []
    for number in range(5):
        folder = folder_for(tmp_path, "web", 1_800_000_000 + number)
        folder.mkdir(parents=True)
        os.utime(folder, (1_800_000_000 + number,) * 2)
        made.append(folder)
    removed = prune(tmp_path, 2)
    assert removed == made[:3] and folders(tmp_path) == made[3:]


def test_folder_names_never_collide(tmp_path):
    first = folder_for(tmp_path, "web", 1_800_000_000)
    first.mkdir(parents=True)
    second = folder_for(tmp_path, "web", 1_800_000_000)
    assert second.name == first.name + "-2"
