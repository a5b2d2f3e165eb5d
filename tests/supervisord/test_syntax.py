"""The one writer of supervisord values: every string either reads back exactly through supervisor's own parser
(a whole program file through ServerOptions, as supervisord reads it) or is refused, never anything else;
fuzzed with strings of every Unicode category, quotes, `%`, `;`, `#` and backslashes."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supervisor.options import ServerOptions

from baremetal.supervisord import syntax

# Every Unicode category, with the characters supervisord's parsers treat specially drawn often.
SPECIAL = list("'\"%;#\\ \t\r\n\x0b\x0c\x85\u2028\u3000\u00a0()=,$`*?~!&|<>{}[]") + ["%(here)s", "%(ENV_HOME)s",
                                                                                   " ;", " #", "%%"]
CHARACTERS = st.characters(codec=None) | st.sampled_from(SPECIAL)
TEXT = st.lists(CHARACTERS, max_size=24).map("".join)
FUZZ = settings(max_examples=int(os.environ.get("BAREMETAL_FUZZ_EXAMPLES", "400")), deadline=None, suppress_health_check=list(HealthCheck))


def read_program(folder: Path, command: str, environment: str, directory: str) -> object:
    """One program file, read by supervisord's own ServerOptions.realize as supervisord would read it."""
    (folder / "conf.d").mkdir(parents=True, exist_ok=True)
    (folder / "supervisord.conf").write_text(
        f"[supervisord]\nlogfile={folder}/supervisord.log\npidfile={folder}/s.pid\n"
        f"[include]\nfiles = conf.d/*.conf\n", encoding="utf-8")
    (folder / "conf.d" / "p.conf").write_text(
        f"[program:p]\ncommand={command}\nenvironment={environment}\ndirectory={directory}\n", encoding="utf-8")
    options = ServerOptions()
    options.realize(["-c", str(folder / "supervisord.conf")])
    groups = options.process_group_configs
    assert [group.name for group in groups] == ["p"]
    return groups[0].process_configs[0]


@FUZZ
@given(argv=st.lists(TEXT, min_size=1, max_size=4), value=TEXT, directory=TEXT)
def test_every_string_reads_back_exactly_or_is_refused(tmp_path_factory, argv, value, directory):
    folder = tmp_path_factory.mktemp("fuzz")
    try:
        command = syntax.command(argv)
    except syntax.UnsafeValue as refused:
        assert syntax.control_character("".join(argv)), refused
        command = None
    try:
        environment = syntax.environment({"V": value, "OTHER": "x"})
    except syntax.UnsafeValue:
        environment = None
    try:
        where = syntax.value("/d/" + directory)
    except syntax.UnsafeValue:
        where = None
    program = read_program(folder, command or "true", environment or "", where or "/d")
    if command is not None:
        assert shlex.split(program.command) == argv
    if environment is not None:
        assert program.environment == {"V": value, "OTHER": "x"}
    if where is not None:
        assert program.directory == "/d/" + directory


@FUZZ
@given(TEXT)
def test_a_comment_line_changes_nothing_else(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("comment")
    try:
        line = syntax.comment(text)
    except syntax.UnsafeValue:
        assert syntax.control_character(text)
        return
    (folder / "supervisord.conf").write_text(f"; {line}\n[supervisord]\nlogfile={folder}/s.log\n"
                                             f"pidfile={folder}/s.pid\n; {line}\n[program:p]\n; {line}\n"
                                             f"command=true\n; {line}\n", encoding="utf-8")
    options = ServerOptions()
    options.realize(["-c", str(folder / "supervisord.conf")])
    assert [group.name for group in options.process_group_configs] == ["p"]
    assert options.process_group_configs[0].process_configs[0].command == "true"


@pytest.mark.parametrize("argv, encoded", [
    (["sh", "-c", "echo a ; echo b"], "sh -c 'echo a ''; echo b'"),
    (["print('100%')"], "'print('\"'\"'100%%'\"'\"')'"),
    (["%(here)s"], "%%'(here)s'"),
    (["x #y"], "'x ''#y'"),
    ([""], "''"),
])
def test_command_pieces_keep_comments_and_here_out(argv, encoded):
    assert syntax.command(argv) == encoded


@pytest.mark.parametrize("kind, text, reason", [
    ("environment", "hello ;world", "a space before ';' or '#' starts a comment"),
    ("environment", "it's \"x\"", "holding both ' and \""),
    ("environment", "'quoted'", "strips quotes at either end"),
    ("environment", "a\rb", "a carriage return (\\r)"),
    ("environment", "%(here)s", "supervisord replaces '%(here)s'"),
    ("value", "/tmp/a #b", "a space before ';' or '#' starts a comment"),
    ("value", "/tmp/a\u3000;b", "a space before ';' or '#' starts a comment"),
    ("value", "/tmp/x ", "strips spaces at either end"),
    ("value", "/tmp\n[program:evil]", "a line break (\\n)"),
    ("comment", "x\u2028y", "U+2028"),
])
def test_refusals_say_what_is_not_allowed(kind, text, reason):
    problem = {"environment": syntax.environment_value_problem, "value": syntax.value_problem,
               "comment": lambda t: syntax._problem(t, "comment")}[kind](text)
    assert problem and reason in problem


def test_log_file_names_survive_supervisords_second_expansion(tmp_path):
    """stdout_logfile= is %-expanded twice by supervisord: a % in the root must be written %%%%."""
    logs = tmp_path / "50%logs"
    logs.mkdir()
    (tmp_path / "supervisord.conf").write_text(
        f"[supervisord]\nlogfile={tmp_path}/s.log\npidfile={tmp_path}/s.pid\n[program:p]\ncommand=true\n"
        f"stdout_logfile={syntax.logfile(str(logs), 'p', '.log')}\n", encoding="utf-8")
    options = ServerOptions()
    options.realize(["-c", str(tmp_path / "supervisord.conf")])
    assert options.process_group_configs[0].process_configs[0].stdout_logfile == f"{logs}/p.log"
