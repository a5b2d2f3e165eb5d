"""init, validate and render through the CLI, as an operator runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from baremetal.cli import cli


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def all_commands():
    return sorted(cli.commands)


@pytest.mark.parametrize("name", all_commands())
def test_every_command_has_help(name):
    result = run(name, "--help")
    assert result.exit_code == 0
    command = cli.commands[name]
    assert command.help and len(command.help.strip()) > 40, f"{name} needs a real help text"
    assert "Usage: " in result.output


def test_top_level_help_lists_commands():
    result = run("--help")
    assert result.exit_code == 0
    for name in all_commands():
        assert name in result.output


@pytest.mark.parametrize("profile", ["cpu-demo", "gpu-node", "fastchat"])
def test_init_profiles_validate(short_tmp, profile):
    target = short_tmp / f"{profile}.toml"
    assert run("init", "--profile", profile, str(target)).exit_code == 0
    result = run("validate", "-c", str(target))
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_init_never_replaces_without_force(short_tmp):
    target = short_tmp / "baremetal.toml"
    target.write_text("# mine\n")
    result = CliRunner().invoke(cli, ["init", str(target)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert target.read_text() == "# mine\n"
    assert run("init", "--force", str(target)).exit_code == 0
    assert (short_tmp / "baremetal.toml.bak").read_text() == "# mine\n"
    assert "[stack]" in target.read_text()


def test_config_from_environment_variable(write_stack, short_tmp):
    path = write_stack('[stack]\nname = "envvar"\n[watchdog]\nenabled = false\n', name="other.toml")
    result = run("validate", env={"BAREMETAL_CONFIG": str(path)})
    assert result.exit_code == 0 and "envvar" in result.output


def test_validate_bad_file_exit_2_without_traceback(write_stack):
    path = write_stack('[stack]\nname = "bad"\n[[model]]\nname = "a"\npath = "/m"\ngpus = [0, 0]\nportt = 1\n')
    result = CliRunner().invoke(cli, ["validate", "-c", str(path)])
    assert result.exit_code == 2
    assert "model[0].gpus: GPU 0 is listed twice" in result.output
    assert "model[0].portt: unknown key; did you mean 'port'?" in result.output
    assert f"{path}:6:" in result.output
    assert "Traceback" not in result.output


def test_missing_stack_file_says_what_to_do(short_tmp):
    result = CliRunner().invoke(cli, ["validate", "-c", str(short_tmp / "nope.toml")])
    assert result.exit_code == 2 and "baremetal init" in result.output


def test_validate_json(write_stack):
    path = write_stack('[stack]\nname = "j"\n[[model]]\nname = "a"\npath = "/m"\ngpus = []\n')
    result = run("validate", "--json", "-c", str(path))
    import json

    data = json.loads(result.output)
    assert data["valid"] and {p["name"] for p in data["programs"]} == {"vllm-a", "api", "watchdog"}


STACK = '''
[stack]
name = "r"
root = "state"
[api]
kind = "none"
[watchdog]
enabled = false
[[program]]
name = "one"
command = ["sleep", "100"]
[[program]]
name = "two"
command = ["sleep", "100"]
'''


def test_render_writes_prunes_and_keeps_user_files(write_stack, short_tmp):
    path = write_stack(STACK)
    confd = short_tmp / "state" / "supervisor" / "conf.d"
    first = run("render", "-c", str(path))
    assert first.exit_code == 0
    assert "created" in first.output and (confd / "one.conf").exists() and (confd / "two.conf").exists()
    again = run("render", "-c", str(path))
    assert "unchanged: 3 file(s)" in again.output
    (confd / "mine.conf").write_text("[program:mine]\ncommand=sleep 1\n")
    path.write_text(STACK.replace('[[program]]\nname = "two"\ncommand = ["sleep", "100"]\n', ""))
    pruned = run("render", "-c", str(path))
    assert f"removed  {confd / 'two.conf'}" in pruned.output
    assert not (confd / "two.conf").exists() and (confd / "mine.conf").exists()


def test_render_refuses_to_overwrite_a_file_it_did_not_write(write_stack, short_tmp):
    path = write_stack(STACK)
    confd = short_tmp / "state" / "supervisor" / "conf.d"
    confd.mkdir(parents=True)
    (confd / "one.conf").write_text("; hand-written\n")
    result = CliRunner().invoke(cli, ["render", "-c", str(path)])
    assert result.exit_code == 2 and "was not written by baremetal" in result.output
    assert (confd / "one.conf").read_text() == "; hand-written\n"


def test_render_out_dir(write_stack, short_tmp):
    path = write_stack(STACK)
    out = short_tmp / "review"
    assert run("render", "--out", str(out), "-c", str(path)).exit_code == 0
    assert (out / "supervisord.conf").exists() and (out / "conf.d" / "one.conf").exists()
    assert not (short_tmp / "state" / "supervisor").exists()


def test_python_m_baremetal_and_no_heavy_imports():
    result = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['baremetal', '--help'];"
                             "import runpy\ntry: runpy.run_module('baremetal', run_name='__main__')\n"
                             "except SystemExit: pass\n"
                             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('vllm', 'torch', 'fastchat',"
                             " 'transformers', 'pynvml', 'httpx', 'starlette', 'uvicorn', 'aiohttp')))"],
                            capture_output=True, text=True, check=True)
    assert "Usage: baremetal" in result.stdout
    assert result.stdout.strip().endswith("[]")


def cli_result(*args: str):
    """The CLI with exceptions caught the way a user sees them (a traceback would show in the output)."""
    result = CliRunner().invoke(cli, list(args))
    shown = result.output + (repr(result.exception) if result.exception and result.exit_code not in (0, 1, 2) else "")
    return result.exit_code, shown


SMALL = '[stack]\nname = "t"\nroot = "{root}"\n[api]\nkind = "none"\n[watchdog]\nenabled = false\n'


@pytest.mark.parametrize("case", ["root under /proc", "root a regular file", "--out where nobody may write",
                                  "init under /proc", "TOML nested 5000 deep", "-c /dev/zero", "-c a folder"])
def test_what_used_to_be_a_traceback_is_a_message_with_exit_2(short_tmp, case):
    stack_file = short_tmp / "s.toml"
    (short_tmp / "plain-file").write_text("x")
    roots = {"root under /proc": "/proc/baremetal-root", "root a regular file": str(short_tmp / "plain-file")}
    stack_file.write_text(SMALL.format(root=roots.get(case, "state")))
    args = {
        "root under /proc": ["render", "-c", str(stack_file)],
        "root a regular file": ["render", "-c", str(stack_file)],
        "--out where nobody may write": ["render", "--out", "/proc/self/baremetal-out", "-c", str(stack_file)],
        "init under /proc": ["init", "/proc/baremetal.toml"],
        "TOML nested 5000 deep": ["validate", "-c", str(short_tmp / "deep.toml")],
        "-c /dev/zero": ["validate", "-c", "/dev/zero"],
        "-c a folder": ["validate", "-c", str(short_tmp)],
    }[case]
    (short_tmp / "deep.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    code, output = cli_result(*args)
    assert code == 2, output
    assert "Traceback" not in output and output.startswith("Error: ")
    expected = {"root under /proc": "choose a folder you can write to for the stack's root",
                "root a regular file": "Not a directory", "--out where nobody may write": "for --out",
                "init under /proc": "cannot write /proc/baremetal.toml", "TOML nested 5000 deep": "nested too deeply",
                "-c /dev/zero": "is over 4 MiB", "-c a folder": "is a folder"}[case]
    assert expected in output


@pytest.mark.parametrize("command", [["validate"], ["status"], ["doctor"], ["events"], ["cluster", "status"]])
def test_json_errors_for_an_invalid_stack_file(write_stack, command):
    import json

    stack_file = write_stack('[stack]\nname = "t"\n[watchdog]\ninterval = "0.0001ms"\n')
    result = CliRunner().invoke(cli, [*command, "--json", "-c", str(stack_file)])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ConfigError" and error["exit_code"] == 2 and error["file"] == str(stack_file)
    assert error["issues"] == [{"path": "watchdog.interval", "message": "must be at least 50ms, got '0.0001ms'",
                                "line": 4}]
