"""The run commands through the CLI where no running stack is needed: bad input, a stack that is not
running, logs and their rotation, and ctl's hand-over to supervisorctl (commands on a running stack are
in tests/test_lifecycle_real.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.lifecycle import program_toml, run, stack_toml


@pytest.fixture
def config(write_stack):
    serves = 'serves = { model = "m1", task = "embed", url = "http://127.0.0.1:9" }'
    return write_stack(stack_toml("cli", [program_toml("web", ["sleep", "1"]),
                                          program_toml("emb", ["sleep", "1"], extra=serves)]))


def test_status_when_supervisord_is_not_running(config):
    text = run("status", "-c", str(config))
    assert text.exit_code == 3
    assert "supervisord for stack 'cli' is not running" in text.output and "baremetal up" in text.output
    data = run("status", "--json", "-c", str(config))
    assert data.exit_code == 3
    assert json.loads(data.output)["supervisord"] == {"running": False, "state": "not running", "pid": None}


@pytest.mark.parametrize("command", [["start", "web"], ["stop", "web"], ["restart", "web"], ["down", "web"]])
def test_program_commands_need_supervisord(config, command):
    result = run(*command, "-c", str(config))
    assert result.exit_code == 3 and "is not running" in result.output and "Traceback" not in result.output


def test_down_when_not_running_is_fine(config):
    result = run("down", "-c", str(config))
    assert result.exit_code == 0 and "nothing to stop" in result.output


@pytest.mark.parametrize("args, message", [
    (["up", "--timeout", "soon"], "expected a duration"),
    (["status", "--probe-timeout", "0.001"], "must be at least 10ms"),
    (["up", "--timeout", "0.5"], "must be at least 1s"),
    (["start"], "Missing argument"),
    (["logs", "nope"], "no program or model named 'nope'"),
])
def test_bad_usage_exits_2(config, args, message):
    result = run(*args, "-c", str(config))
    assert result.exit_code == 2 and message in result.output


def test_logs_last_lines_by_program_model_and_stderr(config, short_tmp):
    logs = short_tmp / "state" / "logs"
    logs.mkdir(parents=True)
    (logs / "emb.log").write_text("".join(f"out {index}\n" for index in range(100)))
    (logs / "emb.err.log").write_text("err 1\nerr 2\n")
    (logs / "web.log").write_text("")
    (logs / "web.err.log").write_text("Traceback: boom\n")
    (logs / "supervisord.log").write_text("INFO supervisord started with pid 1\n")
    assert run("logs", "emb", "-n", "2", "-c", str(config)).stdout == "out 98\nout 99\n"
    assert run("logs", "m1", "-n", "1", "-c", str(config)).stdout == "out 99\n"
    assert run("logs", "emb", "--stderr", "-c", str(config)).stdout == "err 1\nerr 2\n"
    assert run("logs", "supervisord", "-c", str(config)).stdout == "INFO supervisord started with pid 1\n"
    assert len(run("logs", "emb", "-c", str(config)).stdout.splitlines()) == 50
    empty = run("logs", "web", "-c", str(config))
    assert empty.exit_code == 0 and "web.log is empty; the program may log to stderr: add --stderr" in empty.stderr


def test_logs_of_a_program_that_never_started(config):
    result = run("logs", "web", "-c", str(config))
    assert result.exit_code == 0 and "does not exist yet" in result.stderr


def test_logs_follow_through_rotation(config, short_tmp):
    logs = short_tmp / "state" / "logs"
    logs.mkdir(parents=True)
    log = logs / "web.log"
    log.write_text("before\n")
    follower = subprocess.Popen([sys.executable, "-m", "baremetal", "logs", "web", "-f", "-n", "1", "-c", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follower.stdout.readline() == b"before\n"
        time.sleep(0.3)
        with open(log, "a") as stream:
            stream.write("appended\n")
        assert follower.stdout.readline() == b"appended\n"
        os.rename(log, logs / "web.log.1")               # supervisord's rotation: rename, reopen
        log.write_text("in the new file\n")
        assert follower.stdout.readline() == b"in the new file\n"
    finally:
        follower.terminate()
        follower.wait(10)


class Recorder:
    """Stands in for os.execv at the CLI's seam (exec would replace the test process)."""

    def __init__(self):
        self.calls = []

    def __call__(self, path, argv):
        self.calls.append((path, list(argv)))


def test_ctl_hands_every_argument_to_supervisorctl(config, short_tmp):
    assert run("render", "-c", str(config)).exit_code == 0
    recorder = Recorder()
    result = run("ctl", "-c", str(config), "tail", "-f", "web", "stderr", obj={"exec": recorder})
    assert result.exit_code == 0, result.output
    conf = short_tmp / "state" / "supervisor" / "supervisord.conf"
    assert recorder.calls == [(sys.executable, [sys.executable, "-X", "utf8", "-m", "supervisor.supervisorctl", "-c", str(conf),
                                                "tail", "-f", "web", "stderr"])]


def test_ctl_before_the_first_render(config):
    result = run("ctl", "-c", str(config), "status", obj={"exec": Recorder()})
    assert result.exit_code == 2 and "run `baremetal up`" in result.output
