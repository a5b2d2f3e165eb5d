"""Finding a stack's processes by more than their environment: the systemd unit's cgroup, the watchdog's
record (a reused pid is never taken for ours), and never the command that ends the stack."""

from __future__ import annotations

import json
import os
import subprocess

import psutil

from baremetal.host.processes import cgroup_members, not_mine, unit_cgroup
from baremetal.supervisord.leftovers import recorded, record_path, snapshot, write_record

V2 = "0::/system.slice/baremetal-llm.service\n"
HYBRID = """9:name=systemd:/system.slice/baremetal-llm.service
4:memory:/system.slice/baremetal-llm.service
0::/system.slice/baremetal-llm.service
"""
NOT_OURS = "0::/user.slice/user-1000.slice/session-3.scope\n"


def test_unit_cgroup_is_found_only_for_a_baremetal_service():
    assert unit_cgroup(V2) == ("unified", "/system.slice/baremetal-llm.service")
    assert unit_cgroup(HYBRID) == ("systemd", "/system.slice/baremetal-llm.service")
    assert unit_cgroup(NOT_OURS) is None
    assert unit_cgroup("0::/system.slice/nginx.service\n") is None
    assert unit_cgroup("0::/\n") is None


def test_no_cgroup_members_outside_a_baremetal_unit():
    assert cgroup_members(os.getpid()) == []       # this test runs in no baremetal-*.service


def test_the_record_names_live_processes_and_never_a_reused_pid(short_tmp):
    child = subprocess.Popen(["sleep", "30"])
    try:
        path = record_path(short_tmp)
        seen = snapshot(os.getpid())
        assert child.pid in [entry["pid"] for entry in seen]
        write_record(path, os.getpid(), seen)
        assert path.stat().st_mode & 0o777 == 0o600
        assert child.pid in [process.pid for process in recorded(path)]
        document = json.loads(path.read_text())
        for entry in document["processes"]:
            entry["create_s"] -= 100.0                  # as if the pid had been reused since
        path.write_text(json.dumps(document))
        assert recorded(path) == []
    finally:
        child.kill()
        child.wait()
    assert recorded(short_tmp / "missing.json") == []


def test_the_command_ending_the_stack_never_ends_itself_or_its_parents():
    me, parent = psutil.Process(), psutil.Process().parent()
    child = subprocess.Popen(["sleep", "30"])
    try:
        kept = not_mine([me, parent, psutil.Process(child.pid)])
        assert [process.pid for process in kept] == [child.pid]
    finally:
        child.kill()
        child.wait()
