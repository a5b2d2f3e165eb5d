"""doctor's word on stack dumps: which of Yama's rules applies here and whether the watchdog can read the
engines (it is their sibling under supervisord, not their ancestor)."""

from __future__ import annotations

import pytest

from baremetal.doctor.checks import OK, WARN, ptrace_check

PY_SPY = "/opt/bm/bin/py-spy"


@pytest.mark.parametrize("scope,user,root,unit,filecap,status,words", [
    (None, "llm", False, False, False, OK, "no Yama module: the watchdog reads the stacks of the programs of its own user (llm)"),
    (0, "llm", False, False, False, OK, "Yama ptrace_scope 0"),
    (1, "llm", False, True, False, OK, "the systemd unit grants the stack CAP_SYS_PTRACE"),
    (1, "root", True, False, False, OK, "running as root, which holds CAP_SYS_PTRACE"),
    (1, "llm", False, False, True, OK, "carries the cap_sys_ptrace file capability"),
    (1, "llm", False, False, False, WARN, "only an ancestor or a holder of CAP_SYS_PTRACE may read another process, "
     "and the watchdog is not an ancestor of the engines (supervisord is): started by llm"),
    (2, "llm", False, False, False, WARN, "only a holder of CAP_SYS_PTRACE may read another process"),
    (2, "llm", False, True, False, OK, "grants the stack CAP_SYS_PTRACE"),
    (3, "root", True, True, True, WARN, "no process may read another"),
])
def test_ptrace_table(scope, user, root, unit, filecap, status, words):
    check = ptrace_check(scope, user, root, unit, PY_SPY, filecap)
    assert check.status == status and words in check.summary, check
    if status == WARN and scope in (1, 2):
        assert "sudo baremetal install --systemd" in check.fix and f"setcap cap_sys_ptrace+ep {PY_SPY}" in check.fix


def test_without_py_spy():
    check = ptrace_check(0, "llm", False, False, None, False)
    assert check.status == WARN and "py-spy is not installed" in check.summary
