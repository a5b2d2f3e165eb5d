"""What a stack's own user may reach, judged from permission bits, and what `up` refuses to start."""

from __future__ import annotations

import os

import pytest

from baremetal.config import load_stack
from baremetal.errors import UsageError
from baremetal.host.accounts import EXECUTE, READ, WRITE, Account, allowed, can_reach
from baremetal.stack.ownership import prepare, reach_problems

LLM = Account("llm", 990, 990, "llm", frozenset({990, 44}), "/srv/llm/home")


@pytest.mark.parametrize("mode, owner, group, want, expected", [
    (0o640, 990, 0, READ, True),          # its own file
    (0o640, 0, 990, READ, True),          # root's, its group, group-readable
    (0o640, 0, 990, WRITE, False),
    (0o640, 0, 0, READ, False),           # root's, not world-readable
    (0o644, 0, 0, READ, True),
    (0o750, 0, 44, EXECUTE, True),        # a supplementary group (video)
    (0o700, 0, 0, EXECUTE, False),
])
def test_permission_bits(mode, owner, group, want, expected):
    assert allowed(mode, owner, group, LLM, want) is expected


def test_a_folder_on_the_way_that_it_cannot_search_blocks_everything_below(short_tmp):
    inner = short_tmp / "a" / "b.txt"
    inner.parent.mkdir()
    inner.write_text("x")
    os.chmod(short_tmp, 0o700)                 # root's, searchable by root only
    assert not can_reach(inner, LLM, READ)
    os.chmod(short_tmp, 0o755)
    assert can_reach(inner, LLM, READ) and not can_reach(inner, LLM, WRITE)
    assert not can_reach(short_tmp / "missing", LLM, READ)


@pytest.mark.skipif(os.geteuid() != 0, reason="handing folders to another user (chown) needs root")
def test_up_names_what_the_user_cannot_reach(write_stack, short_tmp):
    keys = short_tmp / "keys"
    keys.write_text("k\n")
    os.chmod(keys, 0o600)
    os.chmod(short_tmp, 0o755)
    stack = load_stack(write_stack(f'[stack]\nname = "u"\nroot = "state"\nuser = "llm"\n'
                                   f'[api]\napi_keys = ["file:{keys}"]\n'))
    problems = reach_problems(stack, LLM)
    assert any(f"a key file {keys}" in problem and "group llm" in problem for problem in problems)
    with pytest.raises(UsageError, match="cannot reach what the stack needs"):
        prepare(stack, print, account=LLM, euid=0)
    assert (stack.root / "logs").stat().st_uid == 990          # what it writes was handed over first
    # The watchdog (as the user) writes a hang's evidence there: its own, and only its own.
    assert (stack.root / "evidence").stat().st_uid == 990 and (stack.root / "evidence").stat().st_mode & 0o777 == 0o700
    assert (stack.root / "supervisor").stat().st_mode & 0o7777 == 0o2750


def test_run_as_another_user_it_says_how_to_run_it(write_stack):
    stack = load_stack(write_stack('[stack]\nname = "u"\nuser = "llm"\n'))
    with pytest.raises(UsageError, match="run this as root .* or as llm itself"):
        prepare(stack, print, account=LLM, euid=1000)
    prepare(stack, print, account=LLM, euid=990)               # as the user itself: nothing to do
