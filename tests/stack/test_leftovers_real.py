"""No process outlives `down`: a daemon that a program double-forks with a cleared environment in a session
of its own is ended too, by a normal `down` and after supervisord itself was killed. Real supervisord,
real processes, the CLI as an operator runs it."""

from __future__ import annotations

import json
import os
import random
import signal

import psutil
import pytest

from tests.support.lifecycle import alive, force_down, program_toml, run, stack_toml, status_json
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real supervisord and real processes


@pytest.fixture
def stack(write_stack, short_tmp):
    made = []

    def make(programs: list[str], watchdog: bool = False):
        text = stack_toml("left", programs)
        if watchdog:
            text = text.replace("[watchdog]\nenabled = false", f"[watchdog]\nmetrics_port = {_free_port()}")
        config = write_stack(text)
        made.append(config)
        return config

    yield make
    for config in made:
        if (short_tmp / "state" / "run" / "supervisord.pid").exists():
            run("down", "-c", str(config))
    force_down(short_tmp / "state")


def _free_port() -> int:
    from tests.support.ports import free_port

    return free_port()


def _daemonizer() -> tuple[str, str]:
    """A program that leaves a daemon behind as `sh -c 'env -i setsid sleep N &'` does, and the daemon's
    unmistakable argument."""
    seconds = f"{random.randint(2000, 9000)}.{random.randint(100, 999)}"
    command = ["sh", "-c", f"(env -i setsid sleep {seconds} &); exec sleep 600"]
    return program_toml("daemonizer", command), seconds


def _daemon(seconds: str) -> psutil.Process | None:
    for process in psutil.process_iter():
        try:
            if process.cmdline() == ["sleep", seconds]:
                return process
        except psutil.Error:
            continue
    return None


def test_down_ends_a_daemon_that_left_the_program(stack, short_tmp):
    program, seconds = _daemonizer()
    config = stack([program])
    assert run("up", "--timeout", "60s", "-c", str(config)).exit_code == 0
    daemon = wait_for(lambda: _daemon(seconds), 10, what="the daemon started")
    assert "SUPERVISOR_SERVER_URL" not in daemon.environ() and os.getsid(daemon.pid) == daemon.pid
    supervisord = status_json(config)["supervisord"]["pid"]
    assert daemon.ppid() == supervisord              # adopted: supervisord is a subreaper, not init
    # supervisord's umask (027): its logs are not world-readable.
    assert (short_tmp / "state" / "logs" / "daemonizer.log").stat().st_mode & 0o777 == 0o640
    result = run("down", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert f"{daemon.pid} (sleep {seconds})" in result.output
    assert not alive(daemon.pid) and not alive(supervisord)


def test_up_after_supervisord_was_killed_ends_the_daemon_from_the_watchdogs_record(stack, short_tmp):
    program, seconds = _daemonizer()
    config = stack([program], watchdog=True)
    assert run("up", "--timeout", "60s", "-c", str(config)).exit_code == 0
    daemon = wait_for(lambda: _daemon(seconds), 10, what="the daemon started")
    record = short_tmp / "state" / "run" / "processes.json"
    wait_for(lambda: record.exists() and daemon.pid in [p["pid"] for p in json.loads(record.read_text())["processes"]],
             20, what="the watchdog recorded the daemon")
    supervisord = status_json(config)["supervisord"]["pid"]
    os.kill(supervisord, signal.SIGKILL)
    wait_for(lambda: not alive(supervisord), 10, what="supervisord gone")
    assert alive(daemon.pid) and daemon.ppid() != supervisord           # orphaned again, to init
    result = run("up", "--timeout", "60s", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "orphaned program process(es) left by the dead supervisord" in result.output
    assert f"{daemon.pid} (sleep {seconds})" in result.output and not alive(daemon.pid)
