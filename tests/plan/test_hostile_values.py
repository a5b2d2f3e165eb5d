"""Hostile strings in a stack file, one case per row: each is refused with the field and what is not allowed,
or rendered and read back by supervisor's own parser (ServerOptions.realize) exactly as written, with no
program but the stack's own. Nothing is written in a refused case."""

from __future__ import annotations

import json
import shlex
import sys

import pytest
from supervisor.options import ServerOptions

from baremetal.config import load_stack
from baremetal.errors import ConfigError
from baremetal.plan.pipeline import generate
from tests.support.toml_text import toml_value

HEAD = '[stack]\nname = "hostile"\nroot = "{root}"\n{stack}\n[api]\nkind = "none"\n[watchdog]\nenabled = false\n'
MODEL = '[[model]]\nname = "m"\npath = "/models/m"\ngpus = []\n'


def program(name: str = "p", command=("sleep", "60"), **keys) -> str:
    lines = ["[[program]]", f"name = {toml_value(name)}", f"command = {toml_value(list(command))}"]
    lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


# (case, extra [stack] lines, the rest of the file, field path, what the message says)
REFUSED = [
    ("newline in directory", "", program(directory="/tmp\n[program:evil]\ncommand=touch /tmp/X"),
     "program[0].directory", "a line break (\\n)"),
    ("newline in a command argument", "", program(command=["sh", "-c", "x\n[program:evil]"]),
     "program[0].command[2]", "a line break (\\n)"),
    ("newline in a model name (the comment line)", "", MODEL.replace('"m"', json.dumps("m\n[program:evil]"), 1),
     "model[0].name", "a line break (\\n)"),
    ("carriage return in args", "", MODEL + 'args = ["--x", "1\\r[program:evil]"]\n', "model[0].args[1]",
     "a carriage return (\\r)"),
    ("newline in tool_call_parser", "", MODEL + 'tool_call_parser = "hermes\\n[program:evil]"\n',
     "model[0].tool_call_parser", "a line break (\\n)"),
    ("carriage return in an environment value", "", program(environment={"G": "a\rb"}),
     "program[0].environment.G", "a carriage return (\\r)"),
    ("control character in a key nobody reads yet", "", '[controller]\nfuture_key = "a\\u0007"\n',
     "controller.future_key", "U+0007"),
    ("control character in a table key", 'environment = { "A\\nB" = "x" }', "", 'stack.environment."A\\nB"',
     "a line break"),
    ("' ;' in an environment value", "", program(environment={"G": "hello ;world"}), "program[0].environment",
     "a space before ';' or '#' starts a comment"),
    ("' #' in a directory", "", program(directory="/tmp/a #b"), "program[0].directory",
     "a space before ';' or '#' starts a comment"),
    ("%(here)s in an environment value", "", program(environment={"G": "%(here)s"}), "program[0].environment",
     "supervisord replaces '%(here)s'"),
    ("both quotes in timezone", 'timezone = "Eu\'rope\\"x"', "", "stack.timezone", "both ' and \""),
    ("' ;' in root", None, "", "stack.root", "a space before ';' or '#' starts a comment"),
    ("a program named supervisord", "", program("supervisord"), "program[0].name", "supervisord's own log"),
    ("a program named all", "", program("all"), "program[0].name", "supervisorctl reads `start all`"),
    ("x and x.err share a log file", "", program("x") + program("x.err"), "program[1].name",
     "logs/x.err.log, which is the stderr log of program[0]"),
    ("a model whose program would be x.err", "", program("vllm-x") + MODEL.replace('"m"', '"x.err"', 1),
     "model[0].name", "stderr log of program[0]"),
]


@pytest.mark.parametrize("case, stack, rest, field, message", REFUSED, ids=[row[0] for row in REFUSED])
def test_refused_with_the_field_and_the_reason(short_tmp, case, stack, rest, field, message):
    root = short_tmp / ("a ;b" if stack is None else "root")
    path = short_tmp / "baremetal.toml"
    path.write_text(HEAD.format(root=root, stack=stack or "") + rest, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_stack(path)
    issues = [(issue.path, issue.message) for issue in caught.value.issues]
    assert any(path == field and message in text for path, text in issues), issues
    assert not root.exists()


def realized(stack) -> dict:
    """The programs as supervisord's own parser reads the rendered files."""
    options = ServerOptions()
    options.realize(["-c", str(stack.supervisord_conf)])
    return {group.name: group.process_configs[0] for group in options.process_group_configs}


TRICKY_ARGV = [
    ["sh", "-c", "echo a ; echo b # not a comment"],
    [sys.executable, "-c", "print('100%')", "%(here)s", "%(ENV_HOME)s", "%%", "x #y", "x\t;y".replace("\t", " ")],
    ["printf", "%s\\n", "it's \"quoted\"", "back\\slash", "$HOME", "*", "", "\u3000;wide", "名前 ;#"],
]
TRICKY_ENVIRONMENT = {"A": "50% off, \"quoted\" deal", "B": "it's", "C": "a b,c=d", "D": "", "E": "x;y#z",
                      "F": "%%(here", "G": "名前"}


def test_what_is_accepted_reaches_supervisord_exactly(short_tmp):
    root = short_tmp / "50% root"
    body = "".join(program(f"p{index}", argv, directory=str(short_tmp / "dir;#x"), environment=TRICKY_ENVIRONMENT)
                   for index, argv in enumerate(TRICKY_ARGV))
    path = short_tmp / "baremetal.toml"
    path.write_text(HEAD.format(root=root, stack='timezone = "Europe/Paris"') + body, encoding="utf-8")
    stack = load_stack(path)
    generate(stack)
    programs = realized(stack)
    assert sorted(programs) == ["p0", "p1", "p2"]
    for index, argv in enumerate(TRICKY_ARGV):
        config = programs[f"p{index}"]
        assert shlex.split(config.command) == argv
        assert config.directory == str(short_tmp / "dir;#x")
        assert {name: config.environment[name] for name in TRICKY_ENVIRONMENT} == TRICKY_ENVIRONMENT
        assert config.environment["TZ"] == "Europe/Paris"
        assert config.environment["TMPDIR"] == str(root / "tmp")
        assert config.stdout_logfile == str(root / "logs" / f"p{index}.log")
        assert config.stderr_logfile == str(root / "logs" / f"p{index}.err.log")


def test_model_values_reach_the_comment_and_the_command_exactly(short_tmp):
    """A model name and parser with quotes, ';' and '#' stay in their comment line and their argument."""
    name = 'chat "one" ;#%(here)s'
    path = short_tmp / "baremetal.toml"
    path.write_text(HEAD.format(root=short_tmp / "root", stack="") +
                    MODEL.replace('"m"', toml_value(name), 1) + 'program = "chat"\ntool_call_parser = "a ;b"\n'
                    + '[env.default]\nkind = "system"\npython = "/usr/bin/python3"\npackages = ["vllm==0.33.0"]\n',
                    encoding="utf-8")
    stack = load_stack(path)
    generate(stack)
    config = realized(stack)["chat"]
    argv = shlex.split(config.command)
    assert argv[argv.index("--served-model-name") + 1] == name
    assert argv[argv.index("--tool-call-parser") + 1] == "a ;b"
    text = (stack.supervisor_dir / "conf.d" / "chat.conf").read_text()
    assert f'; worker serving "{name}" (vllm)' in text
