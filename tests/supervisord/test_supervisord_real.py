"""The rendered supervisord.conf runs under real supervisord: programs reported, socket private."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys

import psutil
import pytest

from baremetal.config import load_stack
from baremetal.plan.pipeline import generate
from baremetal.supervisord.client import SupervisorClient
from baremetal.supervisord.states import ProcessState
from baremetal.watchdog.restart import log_tail
from tests.support.ports import free_port
from tests.support.toml_text import toml_value
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real supervisord and real servers


@contextlib.contextmanager
def supervised(stack):
    """The stack's rendered files under real supervisord; supervisord shut down (and gone) after."""
    generate(stack)
    subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(stack.supervisord_conf)], check=True)
    client = SupervisorClient(stack.socket_path)
    try:
        wait_for(client.is_running, 15)
        yield client
    finally:
        daemon_pid = client.pid()
        client.shutdown()
        wait_for(lambda: not psutil.pid_exists(daemon_pid), 30)


def test_real_supervisord_runs_rendered_files(write_stack, short_tmp):
    port = free_port()
    stack_file = write_stack(f'''
        [stack]
        name = "realtest"
        root = "state"
        [api]
        kind = "none"
        [watchdog]
        enabled = false
        [[program]]
        name = "web"
        command = ["{sys.executable}", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
        health = "http://127.0.0.1:{port}/"
    ''')
    stack = load_stack(stack_file)
    with supervised(stack) as client:
        info = wait_for(lambda: next((p for p in client.processes() if p.state == ProcessState.RUNNING), None), 15)
        assert info.name == "web" and psutil.pid_exists(info.pid)
        assert stat.S_IMODE(os.stat(stack.socket_path).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(stack.socket_path.parent).st_mode) == 0o700
        assert (stack.logs_dir / "supervisord.log").exists()
    assert not psutil.pid_exists(info.pid)


def test_log_tails_of_programs_that_log_control_characters(write_stack, short_tmp):
    """Ray and vLLM colour their logs: supervisord's XML-RPC log answers break on such bytes (expat refuses
    them), so the evidence the watchdog keeps and `up`'s failure report come from the files themselves."""
    script = "import sys, time; print('\\x1b[33mwarning\\x1b[0m ready', flush=True); " \
             "print('\\x1b[31merror\\x1b[0m', file=sys.stderr, flush=True); time.sleep(600)"
    stack_file = write_stack(f'''
        [stack]
        name = "colours"
        root = "state"
        [api]
        kind = "none"
        [watchdog]
        enabled = false
        [[program]]
        name = "colourful"
        command = {toml_value([sys.executable, "-c", script])}
    ''')
    with supervised(load_stack(stack_file)) as client:
        wait_for(lambda: "ready" in client.tail("colourful"), 15)
        assert client.tail("colourful") == "\x1b[33mwarning\x1b[0m ready\n"
        assert client.tail("colourful", stderr=True) == "\x1b[31merror\x1b[0m\n"
        assert log_tail(client, "colourful") == {"stdout": ["\x1b[33mwarning\x1b[0m ready"],
                                                 "stderr": ["\x1b[31merror\x1b[0m"]}
