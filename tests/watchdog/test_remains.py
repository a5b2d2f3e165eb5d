"""What a program's previous instance left running: chosen by process group and start time (pure), and
ended for real (a leader killed with SIGKILL whose child lives on in its group, as vLLM's EngineCore
does when its API server is killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import psutil

from baremetal.supervisord.states import ProcessState
from baremetal.watchdog.remains import Instance, Member, Remains, ended, left_by
from tests.support.waiting import wait_for


def info(name: str, pid: int, state: ProcessState = ProcessState.RUNNING):
    return SimpleNamespace(name=name, pid=pid, state=state, start_s=100.0)


def test_an_instance_ends_when_its_program_has_another_pid_or_none():
    seen = {"a": Instance("a", 10, 100.0), "b": Instance("b", 20, 100.0), "c": Instance("c", 30, 100.0),
            "d": Instance("d", 40, 100.0)}
    infos = [info("a", 10), info("b", 21), info("c", 0, ProcessState.BACKOFF), info("d", 40, ProcessState.STOPPING)]
    assert [i.program for i in ended(seen, infos)] == ["b", "c"]


def test_the_members_left_are_those_of_the_group_started_after_the_instance():
    instance = Instance("chat", 500, 1000.0)
    members = [Member(500, 500, 1000.0),          # the leader itself (still exiting)
               Member(501, 500, 1003.5),          # its EngineCore
               Member(502, 500, 999.4),           # dated by psutil to the whole second of the boot time
               Member(480, 500, 900.0),           # started long before: not this instance's
               Member(600, 600, 1004.0)]          # another group
    assert [m.pid for m in left_by(instance, members)] == [501, 502]


CHILD = "import os, time; print(os.getpid(), flush=True); time.sleep(300)"
LEADER = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
          "stdout=sys.stdout); time.sleep(300)")


def started_group():
    """A leader in a group of its own (as supervisord starts a program) and its child; (leader, child pid)."""
    leader = subprocess.Popen([sys.executable, "-c", LEADER, CHILD], stdout=subprocess.PIPE, text=True,
                              process_group=0)
    return leader, int(leader.stdout.readline())


def test_what_a_killed_instance_left_is_ended_and_said():
    said = []
    pool = ThreadPoolExecutor(1)
    remains = Remains(pool, lambda *args: said.append(args), grace_s=5.0)
    leader, child = started_group()
    try:
        remains.look({"chat": info("chat", leader.pid)})
        remains.look({"chat": info("chat", leader.pid)})           # the same instance: nothing to do
        assert psutil.pid_exists(child) and not said
        leader.send_signal(signal.SIGKILL)
        leader.wait(10)
        os.kill(child, signal.SIGSTOP)                             # a stopped one must go too
        remains.look({"chat": info("chat", 0, ProcessState.BACKOFF)})
        wait_for(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE,
                 15, 0.05, "the child ended")
        wait_for(lambda: said, 5, 0.05, "the event")
        kind, message, program, details = said[0]
        assert (kind, program, details["instance_pid"], details["pids"]) == ("remains", "chat", leader.pid, [child])
        assert f"{child} (" in message and f"pid {leader.pid}" in message
    finally:
        pool.shutdown(wait=True)
        for pid in (leader.pid, child):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_live_instance_group_is_left_alone():
    said = []
    pool = ThreadPoolExecutor(1)
    remains = Remains(pool, lambda *args: said.append(args), grace_s=0.5)
    leader, child = started_group()
    try:
        instance = Instance("chat", leader.pid, psutil.Process(leader.pid).create_time())
        began = time.monotonic()
        assert remains.end(instance) == []                         # its pid still names it: not gone
        assert time.monotonic() - began >= 0.5 and psutil.pid_exists(child) and not said
    finally:
        pool.shutdown(wait=True)
        leader.kill()
        leader.wait(10)
        os.kill(child, signal.SIGKILL)
