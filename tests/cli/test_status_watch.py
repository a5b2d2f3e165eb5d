"""`status --watch` without a terminal (each run after a line with its time, JSON one object a line), while
supervisord is down (it may come up: the watch goes on), and `status` never importing Textual."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.support.lifecycle import program_toml, run, stack_toml


@pytest.fixture
def config(write_stack):
    return write_stack(stack_toml("watch", [program_toml("web", ["sleep", "1"])]))


def watch_lines(config, *extra: str, count: int) -> list[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "baremetal", "status", "--watch", "--interval", "100ms",
                                *extra, "-c", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = [process.stdout.readline() for _ in range(count)]
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 130
        return lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_watch_goes_on_while_supervisord_is_down(config):
    lines = watch_lines(config, count=6)
    heads = [line for line in lines if line.startswith(b"every 0.1s: baremetal status (exit 3)")]
    assert len(heads) == 2
    assert sum(b"supervisord for stack 'watch' is not running" in line for line in lines) == 2


def test_watch_json_is_one_object_a_line(config):
    objects = [json.loads(line) for line in watch_lines(config, "--json", count=3)]
    assert [item["supervisord"]["running"] for item in objects] == [False, False, False]


def test_bad_interval_is_a_usage_error(config):
    result = run("status", "--watch", "--interval", "often", "-c", str(config))
    assert result.exit_code == 2 and "--interval" in result.output


def test_status_and_help_do_not_import_textual(config):
    code = ("import sys\nfrom baremetal.cli import main\nsys.argv = ['baremetal'] + sys.argv[1:]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('textual' in sys.modules, file=sys.stderr)\n")
    for args in (["status", "-c", str(config)], ["--help"], ["top", "--help"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert done.stderr.strip().splitlines()[-1] == "False", (args, done.stderr)
