"""The watchdog against real faults on real processes under real supervisord (no vLLM needed here).

Each test renders a stack with a small real HTTP server as a [[program]] and the `watchdog` program as
baremetal renders it (`python -m baremetal watchdog -c FILE`), starts supervisord, makes a fault, and
checks what an operator would: the program serves again (or is left stopped), `supervisorctl status`,
<root>/run/watchdog.json and the events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from baremetal.config import load_stack
from baremetal.supervisord.client import SupervisorClient
from baremetal.supervisord.states import ProcessState
from baremetal.watchdog.state_file import read_state
from tests.support.ports import free_port
from tests.support.waiting import wait_for
from tests.support.watched import SERVER, watched_stack

pytestmark = pytest.mark.e2e   # real supervisord and real servers


def stack_text(port: int, *server_args: str, watchdog: str = "", program: str = "") -> str:
    command = ", ".join(f'"{word}"' for word in [sys.executable, str(SERVER), "--port", str(port), *server_args])
    return f'''
        [stack]
        name = "wdtest"
        root = "state"
        [api]
        kind = "none"
        [watchdog]
        metrics_port = {free_port()}
        {watchdog}
        [[program]]
        name = "web"
        command = [{command}]
        health = "http://127.0.0.1:{port}/health"
        startsecs = 1
        {program}
    '''


def ready(run, name="web", restarts=None):
    entry = run.program(name)
    return entry.get("phase") == "ready" and (restarts is None or entry.get("restarts") == restarts)


def test_sigstopped_server_is_restarted_and_serves_again(write_stack):
    port = free_port()
    with watched_stack(write_stack(stack_text(port))) as run:
        wait_for(lambda: ready(run), 30, what="web ready")
        old_pid = run.pid("web")
        stopped_at = time.time()
        os.kill(old_pid, signal.SIGSTOP)
        restart = wait_for(lambda: run.events("web", "restart"), 15, what="restart event")[0]
        detected_s = restart["time_s"] - stopped_at
        # interval 1s x unhealthy_after 3, each probe timing out after probe_timeout 1s
        assert detected_s < 5.0, detected_s
        assert "3 probes failed in a row" in restart["message"]
        assert f"processes stopped (SIGSTOP): {old_pid}" in restart["message"]
        assert "listening on" in " ".join(restart["log_tail"]["stdout"])
        assert restart["probes"][-1]["probe_ok"] is False
        wait_for(lambda: ready(run, restarts=1), 15, what="web ready again")
        assert not psutil.pid_exists(old_pid)           # the stopped process was resumed and ended
        assert run.pid("web") != old_pid
        restarted = run.events("web", "restarted")[0]
        assert restarted["report"]["resumed"] == [old_pid] and restarted["report"]["started"] is True
        assert "RUNNING" in run.supervisorctl("status", "web")


def test_a_server_that_exits_in_a_loop_is_given_up_and_left_stopped(write_stack):
    port = free_port()
    text = stack_text(port, "--exit-after", "1.5", watchdog='max_restarts = 2\nrestart_window = "10m"')
    with watched_stack(write_stack(text)) as run:
        given_up = wait_for(lambda: run.events("web", "given_up"), 60, what="given_up event")[0]
        assert "exited and was restarted 3 times within 10m (max_restarts 2)" in given_up["message"]
        wait_for(lambda: run.client.process("web").state == ProcessState.STOPPED, 20, what="web stopped")
        entry = run.program("web")
        assert entry["phase"] == "given_up" and entry["healthy"] is False and entry["restarts"] >= 3
        assert "crashing on purpose" in "\n".join(given_up["log_tail"]["stderr"])
        ticks = run.state()["updated_s"]
        wait_for(lambda: run.state()["updated_s"] >= ticks + 3, 10, what="three more watchdog ticks")
        assert run.client.process("web").state == ProcessState.STOPPED   # not restarted behind the operator
        assert run.program("web")["phase"] == "given_up"


def test_an_operator_stop_is_left_alone_and_a_start_is_followed(write_stack):
    port = free_port()
    with watched_stack(write_stack(stack_text(port))) as run:
        wait_for(lambda: ready(run), 30, what="web ready")
        run.supervisorctl("stop", "web")
        wait_for(lambda: run.program("web").get("phase") == "stopped", 10, what="phase stopped")
        ticks = run.state()["updated_s"]
        wait_for(lambda: run.state()["updated_s"] >= ticks + 3, 10, what="three more watchdog ticks")
        assert run.client.process("web").state == ProcessState.STOPPED
        assert "stopped by an operator" in run.program("web")["reason"]
        run.supervisorctl("start", "web")
        wait_for(lambda: ready(run, restarts=0), 15, what="web ready again, with no restart counted")
        assert not run.events("web", "restart")


def test_a_slow_loader_is_not_restarted_before_load_timeout(write_stack):
    port = free_port()
    text = stack_text(port, "--ready-after", "6", watchdog='load_timeout = "20s"')
    with watched_stack(write_stack(text)) as run:
        wait_for(lambda: run.program("web").get("phase") == "loading", 15, what="phase loading")
        wait_for(lambda: ready(run), 30, what="web ready")
        assert run.program("web")["restarts"] == 0 and not run.events("web", "restart")
        ready_event = run.events("web", "ready")[-1]
        assert float(ready_event["message"].split()[2].rstrip("s")) >= 5.0     # "ready after 6.1s (...)"


def test_a_loader_past_load_timeout_is_restarted(write_stack):
    port = free_port()
    text = stack_text(port, "--ready-after", "60", watchdog='load_timeout = "4s"')
    with watched_stack(write_stack(text)) as run:
        restart = wait_for(lambda: run.events("web", "restart"), 20, what="restart event")[0]
        assert "not ready after" in restart["message"] and "load_timeout 4.0s" in restart["message"]


def test_nothing_is_restarted_while_supervisord_shuts_down(write_stack):
    port = free_port()
    with watched_stack(write_stack(stack_text(port))) as run:
        wait_for(lambda: ready(run), 30, what="web ready")
        os.kill(run.pid("web"), signal.SIGSTOP)
        daemon = psutil.Process(run.client.pid())
        run.client.shutdown()               # what `baremetal down` ends with: the watchdog stops first
        psutil.wait_procs([daemon], timeout=60)
        assert run.events(kind="watchdog_stopped")
        assert not run.events("web", "restart")


def test_a_full_down_forgets_the_restart_budget(write_stack):
    """The restart budget and a give-up hold while the stack runs (even across a restart of the watchdog);
    `baremetal down` of the whole stack ends them, so the next `up` starts with every budget whole."""
    stack_file = write_stack(stack_text(free_port()))
    stack = load_stack(stack_file)

    def cli(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "baremetal", "-c", str(stack_file), *words],
                              capture_output=True, text=True, timeout=120)

    def web() -> dict:
        return ((read_state(stack.watchdog_state_path) or {}).get("programs") or {}).get("web") or {}
    try:
        assert cli("up", "--timeout", "60s").returncode == 0
        wait_for(lambda: web().get("phase") == "ready", 30, what="web ready")
        os.kill(SupervisorClient(stack.socket_path).process("web").pid, signal.SIGSTOP)
        wait_for(lambda: web().get("phase") == "ready" and web().get("restarts") == 1, 30, what="web restarted")
        assert cli("down").returncode == 0
        assert not stack.watchdog_state_path.exists()
        assert cli("up", "--timeout", "60s").returncode == 0
        wait_for(lambda: web().get("phase") == "ready", 30, what="web ready after the second up")
        assert web()["restarts"] == 0 and web()["restart_times_s"] == []
    finally:
        cli("down")
