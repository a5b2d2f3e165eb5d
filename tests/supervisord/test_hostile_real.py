"""Hostile strings against real supervisord: what the writer accepts reaches each program exactly (argv,
working folder, environment, as the program itself reports them), nothing but the stack's own programs
runs, and every refused case (an injection in the running stack's own file, a value supervisord would cut,
a second stack on its root, `render --out` into its folder) leaves its files and its processes as they were."""

from __future__ import annotations

import json
import sys

import pytest

from baremetal.config import load_stack
from baremetal.supervisord.client import SupervisorClient
from baremetal.supervisord.states import ProcessState
from tests.support.lifecycle import force_down, run
from tests.support.toml_text import toml_value
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real supervisord and real programs

# The program writes what it received, then stays up.
REPORT = ("import json, os, sys, time; json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': {k: os.environ"
          ".get(k) for k in os.environ if k.startswith('T_')}}, open(os.environ['REPORT_TO'], 'w')); time.sleep(600)")
ARGV = ["echo a ; echo b # c", "%(here)s", "%(ENV_HOME)s", "100%", "it's \"quoted\"", "back\\slash", "$HOME", "*",
        "", "x #y", "\u3000;wide", "名前 ;#"]
ENVIRONMENT = {"T_PERCENT": "50% off, \"deal\" now", "T_SINGLE": "it's", "T_COMMA": "a b,c=d", "T_EMPTY": "",
               "T_MARKS": "x;y#z", "T_HERE": "%%(here", "T_WIDE": "名前"}


def stack_text(folder, name: str = "hostile", extra: str = "") -> str:
    programs = ""
    for index in range(2):
        programs += (f"[[program]]\nname = \"p{index}\"\nstartsecs = 1\n"
                     f"command = {toml_value([sys.executable, '-c', REPORT, *ARGV])}\n"
                     f"directory = {toml_value(str(folder / 'dir;#50%'))}\n"
                     f"environment = {toml_value(ENVIRONMENT | {'REPORT_TO': str(folder / f'p{index}.json')})}\n")
    return (f'[stack]\nname = "{name}"\nroot = "state"\ntimezone = "Europe/Paris"\n[api]\nkind = "none"\n'
            f"[watchdog]\nenabled = false\n{programs}{extra}")


def files_of(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "supervisor").rglob("*")) if p.is_file()}


@pytest.fixture
def running(short_tmp):
    (short_tmp / "dir;#50%").mkdir()
    config = short_tmp / "baremetal.toml"
    config.write_text(stack_text(short_tmp), encoding="utf-8")
    result = run("up", "--timeout", "60", "-c", str(config))
    try:
        assert result.exit_code == 0, result.output
        yield config
    finally:
        run("down", "-c", str(config))
        force_down(short_tmp / "state")


def test_accepted_values_reach_the_programs_exactly_and_refused_ones_change_nothing(running, short_tmp):
    stack = load_stack(running)
    client = SupervisorClient(stack.socket_path)
    for index in range(2):
        report = wait_for(lambda: _report(short_tmp / f"p{index}.json"), 30, what=f"p{index}'s report")
        assert report["argv"] == ARGV
        assert report["cwd"] == str(short_tmp / "dir;#50%")
        assert report["env"] == ENVIRONMENT
    before = {info.name: info.pid for info in client.processes()}
    assert sorted(before) == ["p0", "p1"]
    files = files_of(stack.root)

    refused = {
        "an injection in its own file": stack_text(short_tmp, extra='[[program]]\nname = "q"\ncommand = ["true"]\n'
                                                   'directory = "/tmp\\n[program:evil]\\ncommand=touch /tmp/X"\n'),
        "a value supervisord would cut": stack_text(short_tmp, extra='[[program]]\nname = "q"\ncommand = ["true"]\n'
                                                    'environment = { G = "hello ;world" }\n'),
        "a control character in a new key": stack_text(short_tmp, extra='[[program]]\nname = "q"\n'
                                                       'command = ["true"]\nfuture = "\\u001b[31m"\n'),
    }
    original = running.read_text(encoding="utf-8")
    for case, text in refused.items():
        running.write_text(text, encoding="utf-8")
        result = run("up", "--timeout", "30", "-c", str(running))
        assert result.exit_code == 2 and "program[2]" in result.output, (case, result.output)
    running.write_text(original, encoding="utf-8")

    other = short_tmp / "other.toml"
    other.write_text(stack_text(short_tmp, name="other").replace('name = "p0"', 'name = "o0"'), encoding="utf-8")
    taken = run("up", "--timeout", "30", "-c", str(other))
    assert taken.exit_code == 2 and "is the root of stack 'hostile'" in taken.output
    out = run("render", "--out", str(stack.supervisor_dir), "-c", str(other))
    assert out.exit_code == 2 and "holds the files of stack 'hostile'" in out.output

    assert files_of(stack.root) == files
    assert {info.name: info.pid for info in client.processes()} == before
    assert all(info.state == ProcessState.RUNNING for info in client.processes())
    again = run("up", "--timeout", "30", "-c", str(running))
    assert again.exit_code == 0 and "nothing changed: no program restarted" in again.output


def _report(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
