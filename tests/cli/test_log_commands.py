"""`baremetal logs` with no program: every program's stdout and stderr, each line after its program's name
(coloured on request), oldest first; --since; following them all through rotation; Ctrl-C exits 130 for
`logs -f` and `events -f` alike. (One program's log: tests/cli/test_run_commands.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from tests.support.lifecycle import program_toml, run, stack_toml
from tests.support.waiting import wait_for


@pytest.fixture
def config(write_stack):
    return write_stack(stack_toml("logs", [program_toml("web", ["sleep", "1"]),
                                           program_toml("vllm-chat", ["sleep", "1"])]))


@pytest.fixture
def logs(short_tmp):
    folder = short_tmp / "state" / "logs"
    folder.mkdir(parents=True)
    return folder


def stamp(minutes_ago: float) -> str:
    """A Python-logging timestamp `minutes_ago` minutes before now, in this host's time."""
    return datetime.fromtimestamp(time.time() - minutes_ago * 60).strftime("%Y-%m-%d %H:%M:%S,000")


def test_every_program_oldest_first_with_its_name(config, logs):
    (logs / "web.log").write_text(f"{stamp(3)} INFO web started\n{stamp(1)} INFO web answered\n")
    (logs / "vllm-chat.err.log").write_text(f"{stamp(2)} INFO loading the model\nTraceback: a continuation\n")
    (logs / "supervisord.log").write_text(f"{stamp(2)} INFO not a program's log\n")
    result = run("logs", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"web       | {stamp(3)} INFO web started",
        f"vllm-chat | {stamp(2)} INFO loading the model",
        "vllm-chat | Traceback: a continuation",
        f"web       | {stamp(1)} INFO web answered"]
    assert "\x1b[" not in result.stdout           # no terminal: no colours


def test_colours_and_streams(config, logs):
    (logs / "web.log").write_text("out of web\n")
    (logs / "web.err.log").write_text("err of web\n")
    (logs / "vllm-chat.err.log").write_text("err of vllm\n")
    coloured = run("logs", "--color", "--stderr", "-c", str(config)).stdout.splitlines()
    assert sorted(line.split("\x1b[0m")[1] for line in coloured) == ["err of vllm", "err of web"]
    web = next(line for line in coloured if "err of web" in line)
    vllm = next(line for line in coloured if "err of vllm" in line)
    assert web[:5] != vllm[:5] and {web[:5], vllm[:5]} <= {"\x1b[36m", "\x1b[33m"}   # one colour per program
    only_stdout = run("logs", "--stdout", "-c", str(config)).stdout
    assert only_stdout == "web       | out of web\n"


def test_since_keeps_the_recent_lines(config, logs):
    (logs / "web.log").write_text(f"{stamp(30)} INFO half an hour ago\n{stamp(5)} INFO five minutes ago\n"
                                  "  a detail of the line before\n")
    recent = run("logs", "--since", "10m", "-c", str(config))
    assert recent.exit_code == 0
    assert recent.stdout.splitlines() == [f"web       | {stamp(5)} INFO five minutes ago",
                                          "web       |   a detail of the line before"]
    one = run("logs", "web", "--since", "1h", "-n", "1", "-c", str(config))
    assert one.stdout == "  a detail of the line before\n"
    bad = run("logs", "--since", "soon", "-c", str(config))
    assert bad.exit_code == 2 and "--since" in bad.output and "Traceback" not in bad.output


def test_no_logs_yet(config):
    result = run("logs", "-c", str(config))
    assert result.exit_code == 0 and "No log files yet" in result.stderr


def read_until(process, text: bytes, timeout_s: float = 10) -> bytes:
    """Lines from the process's stdout until one holds `text`."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while text not in seen:
        assert time.monotonic() < deadline, f"{text!r} not printed; got {seen!r}"
        seen += process.stdout.readline()
    return seen


def test_follow_every_program_through_rotation_then_ctrl_c_exits_130(config, logs):
    (logs / "web.log").write_text("old line\n")
    follower = subprocess.Popen([sys.executable, "-m", "baremetal", "logs", "-f", "-n", "1", "-c", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert read_until(follower, b"old line") == b"web       | old line\n"
        wait_for(lambda: (logs / "web.log").exists(), 5)
        with open(logs / "vllm-chat.err.log", "a") as stream:      # a file that appears after the start
            stream.write("engine started\n")
        assert read_until(follower, b"engine started").endswith(b"vllm-chat | engine started\n")
        os.rename(logs / "web.log", logs / "web.log.1")             # supervisord's rotation
        (logs / "web.log").write_text("in the new file\n")
        assert read_until(follower, b"in the new file").endswith(b"web       | in the new file\n")
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 130
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


@pytest.mark.parametrize("args", [["logs", "web", "-f"], ["events", "-f"], ["status", "--watch", "--interval", "200ms"]])
def test_ctrl_c_exits_130(config, logs, args):
    (logs / "web.log").write_text("a line\n")
    (logs / "events.jsonl").write_text('{"time_s": 1, "kind": "ready", "program": "web", "message": "ready"}\n')
    process = subprocess.Popen([sys.executable, "-m", "baremetal", *args, "-c", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdout.readline()                  # it runs: the first line is out
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 130
        assert b"Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
