"""FastChat's API server gets its keys from a 0600 file, never from its command line or its program file;
a changed key still changes the program file (so `up` restarts the server) without revealing the key."""

from __future__ import annotations

import json
import os
import stat
import sys

from baremetal.config import load_stack
from baremetal.launchers import fastchat_api
from baremetal.plan.pipeline import generate

STACK = '''
[stack]
name = "keys"
root = "state"
[env.fastchat]
kind = "system"
python = "{python}"
[api]
kind = "{kind}"
api_keys = ["{key}", "env:MY_KEY"]
[watchdog]
enabled = false
'''


def render(write_stack, key: str, kind: str = "fastchat"):
    stack = load_stack(write_stack(STACK.format(python=sys.executable, key=key, kind=kind)))
    generate(stack)
    return stack, (stack.supervisor_dir / "conf.d" / "api.conf").read_text()


def test_literal_keys_reach_neither_argv_nor_the_program_file(write_stack):
    for kind in ("fastchat", "fastchat-tools"):
        stack, conf = render(write_stack, "sk-literal-0001", kind)
        assert "sk-literal-0001" not in conf and "MY_KEY" not in conf
        keys = stack.run_dir / "api-keys.json"
        assert f"--keys-file {keys}" in conf
        assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600 and stat.S_IMODE(os.stat(stack.run_dir).st_mode) == 0o700
        assert json.loads(keys.read_text())["specs"] == ["sk-literal-0001", "env:MY_KEY"]
        assert fastchat_api.read_specs(str(keys)) == ["sk-literal-0001", "env:MY_KEY"]


def test_a_changed_key_changes_the_program_file(write_stack):
    _stack, first = render(write_stack, "sk-old-0001")
    _stack, again = render(write_stack, "sk-old-0001")
    assert again == first
    _stack, rotated = render(write_stack, "sk-new-0002")
    assert rotated != first and "sk-new-0002" not in rotated


def test_the_launcher_resolves_each_spec(monkeypatch, tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# team keys\nk-file-1\n\nk-file-2\n")
    monkeypatch.setenv("MY_KEY", "k-env")
    specs = ["k-literal", "env:MY_KEY", f"file:{keys_file}"]
    assert [key for spec in specs for key in fastchat_api.resolve_key(spec)] == \
        ["k-literal", "k-env", "k-file-1", "k-file-2"]
