"""The multi-host harness itself: hosts reach each other, each has its own /dev/shm, and cleanup leaves
nothing behind, even with processes running or frozen, or after a test run that died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support import netns
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(netns.supported() is not None, reason=str(netns.supported()))

ECHO = "import socket,sys;s=socket.create_server((sys.argv[1],int(sys.argv[2])));c,_=s.accept();c.sendall(b'hi')"
CALL = "import socket,sys;print(socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5).recv(2).decode())"


def names() -> tuple[list[str], list[str]]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return namespaces.split(), links.split()


def test_hosts_talk_and_have_private_shm():
    with netns.Network.create(["a", "b"]) as network:
        a, b = network.host("a"), network.host("b")
        server = a.popen([sys.executable, "-c", ECHO, a.address, "7000"])
        try:
            answer = wait_for(lambda: b.run([sys.executable, "-c", CALL, a.address, "7000"]).stdout.strip(),
                                    20, interval_s=0.2, what="a's server answering b")
            assert answer == "hi"
        finally:
            server.kill()
            server.wait()
        # Port 7000 on a's loopback is a's own: the root namespace and b have their own.
        assert a.run(["sh", "-c", "echo x > /dev/shm/psm_test && ls /dev/shm"]).stdout.split() == ["psm_test"]
        assert (a.shm() / "psm_test").exists()
        assert not (b.shm() / "psm_test").exists() and not os.path.exists("/dev/shm/psm_test")
        # The test reaches the hosts through the bridge.
        assert b.run([sys.executable, "-c", f"import socket;socket.create_connection(('{network.gateway_address}',"
                      "9),timeout=3)"]).returncode == 1   # refused (nobody listens), not unreachable
        tag = network.tag
    namespaces, links = names()
    assert not [n for n in namespaces + links if n.startswith(tag)]


def test_close_kills_frozen_processes_and_removes_everything():
    network = netns.Network.create(["a"])
    host = network.host("a")
    sleeper = host.popen(["sleep", "600"])
    wait_for(lambda: sleeper.pid in host.pids(), 10, what="sleep inside the host")
    host.signal_all(signal.SIGSTOP)
    network.close()
    sleeper.wait(timeout=10)
    namespaces, links = names()
    assert not [n for n in namespaces + links if n.startswith(network.tag)]


def test_sweep_removes_what_a_dead_run_left():
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{netns.PREFIX}{dead.pid}a"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "link", "add", f"{netns.PREFIX}{dead.pid}br", "type", "bridge"], check=True)
    netns.sweep_stale()
    namespaces, links = names()
    assert name not in namespaces and f"{netns.PREFIX}{dead.pid}br" not in " ".join(links)
