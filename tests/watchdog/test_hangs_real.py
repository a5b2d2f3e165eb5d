"""Hangs on real processes under real supervisord: the evidence kept before a restart, and stalled starts
told from slow ones. (vLLM's EngineCore frozen mid-request: test_loop_vllm.py; bad GPUs: test_cordon_real.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support.ports import free_port
from tests.support.waiting import wait_for
from tests.support.watched import SERVER, watched_stack

pytestmark = pytest.mark.e2e   # real supervisord and real servers

LOADER = Path(__file__).resolve().parents[1] / "support" / "servers" / "slow_loader.py"


def baremetal(stack_file: Path, *words: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "baremetal", "-c", str(stack_file), *words], capture_output=True,
                          text=True, timeout=60)


def test_sigstopped_program_leaves_evidence_with_every_process_stack(write_stack):
    port = free_port()
    stack_file = write_stack(f'''
        [stack]
        name = "evid"
        root = "state"
        [api]
        kind = "none"
        [watchdog]
        metrics_port = {free_port()}
        evidence_keep = 2
        [[program]]
        name = "web"
        command = ["{sys.executable}", "{SERVER}", "--port", "{port}", "--spawn-child"]
        health = "http://127.0.0.1:{port}/health"
        startsecs = 1
    ''')
    with watched_stack(stack_file) as run:
        wait_for(lambda: run.program("web").get("phase") == "ready", 30, what="web ready")
        server = run.pid("web")
        child = psutil.Process(server).children()[0].pid
        os.kill(server, signal.SIGSTOP)
        restart = wait_for(lambda: run.events("web", "restart"), 15, what="restart event")[0]
        assert restart["message"].startswith("stopped by a signal: 3 probes failed in a row")
        assert restart["hang_kind"] == "stopped_by_signal"
        folder = Path(restart["evidence"])
        restarted = wait_for(lambda: run.events("web", "restarted"), 30, what="restarted event")[0]
        assert restarted["evidence"] == str(folder) and restarted["evidence_s"] < 3.0, restarted
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        stacks = (folder / "stacks.txt").read_text()
        assert f"=== {server} (" in stacks and "state stopped" in stacks and "serve_forever" in stacks
        assert f"=== {child} (" in stacks        # the child, still running: its stack too
        summary = json.loads((folder / "summary.json").read_text())
        assert [p["stack"] for p in summary["processes"]] == [True, True]
        assert "listening on" in (folder / "log-tail.txt").read_text()
        assert json.loads((folder / "probes.json").read_text())[-1]["probe_ok"] is False
        shown = baremetal(stack_file, "events", "--show", "1")
        assert shown.returncode == 0 and "----- stacks.txt -----" in shown.stdout and "serve_forever" in shown.stdout
        listed = baremetal(stack_file, "events", "-p", "web")
        assert f"[evidence: {folder.name}]" in listed.stdout
        wait_for(lambda: run.program("web").get("phase") == "ready", 30, what="web ready again")
        print(f"\nevidence added {restarted['evidence_s']:.2f}s before the stop ({summary['timings_s']})")


def test_a_start_that_never_moves_is_restarted_and_a_slow_one_is_not(write_stack, short_tmp):
    weights = short_tmp / "weights.bin"
    weights.write_bytes(os.urandom(4 << 20))
    stuck_port, slow_port = free_port(), free_port()
    stack_file = write_stack(f'''
        [stack]
        name = "stall"
        root = "state"
        [api]
        kind = "none"
        [watchdog]
        metrics_port = {free_port()}
        start_stall_after = "4s"
        [[program]]
        name = "stuck"
        command = ["{sys.executable}", "-c", "import time; time.sleep(600)"]
        health = "http://127.0.0.1:{stuck_port}/health"
        startsecs = 1
        [[program]]
        name = "slow"
        command = ["{sys.executable}", "{LOADER}", "--port", "{slow_port}", "--load-seconds", "14",
                   "--weights", "{weights}"]
        health = "http://127.0.0.1:{slow_port}/health"
        startsecs = 1
    ''')
    with watched_stack(stack_file) as run:
        began = time.monotonic()
        restart = wait_for(lambda: run.events("stuck", "restart"), 20, what="the stuck start restarted")[0]
        assert restart["message"].startswith("start stalled: no sign of loading progress for"), restart["message"]
        assert "start_stall_after 4.0s" in restart["message"] and restart["hang_kind"] == "start_stalled"
        wait_for(lambda: run.program("slow").get("phase") == "ready", 30, what="the slow start ready")
        assert time.monotonic() - began >= 12.0                # 3 x start_stall_after
        assert not run.events("slow", "restart") and run.program("slow")["restarts"] == 0
        assert run.program("stuck")["restarts"] >= 1
