"""Hosts on this machine for multi-node tests: each a network namespace with its own address on a bridge,
and its own mount namespace with a private /dev/shm (tmpfs), like separate machines on one switch.

    with Network.create(["head", "w1"]) as network:
        network.host("head").run(["ip", "addr"])

Each host has an anchor process (`sleep`) that holds its namespaces; commands enter them with nsenter.
The root namespace reaches every host through the bridge's own address. Cleanup kills every process that
lives in a host's network namespace (whoever started it), then removes namespaces, links and the bridge;
it also runs at the start of a session for networks left by a test run that died (their names carry the
pid of the run that made them). Needs root and iproute2 (`ip netns`), util-linux (`unshare`, `nsenter`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "bmc"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class Host:
    """One host: its namespace, address, and the anchor process whose namespaces commands enter."""

    name: str
    netns: str
    address: str
    link: str                    # the host's end of its veth pair (inside it, named eth0)
    anchor_pid: int = 0

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as run inside this host (its network and mount namespaces)."""
        return ["nsenter", "-t", str(self.anchor_pid), "-n", "-m", "--", *argv]

    def run(self, argv: list[str], timeout_s: float = 120, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(argv), timeout=timeout_s, **kwargs)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), **kwargs)

    def net_inode(self) -> int:
        return os.stat(f"/proc/{self.anchor_pid}/ns/net").st_ino

    def pids(self) -> list[int]:
        """Every process in this host's network namespace but the anchor."""
        return [pid for pid in pids_in_netns(self.net_inode()) if pid != self.anchor_pid]

    def shm(self) -> Path:
        """This host's /dev/shm, seen from outside."""
        return Path(f"/proc/{self.anchor_pid}/root/dev/shm")

    def signal_all(self, signum: int) -> list[int]:
        """Send `signum` to every process of this host (a crash, a freeze, a thaw); returns the pids."""
        sent = []
        for pid in self.pids():
            try:
                os.kill(pid, signum)
                sent.append(pid)
            except ProcessLookupError:
                pass
        return sent

    def unplug(self) -> None:
        _ip("-n", self.netns, "link", "set", "eth0", "down")

    def plug(self) -> None:
        _ip("-n", self.netns, "link", "set", "eth0", "up")


def pids_in_netns(inode: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                    found.append(int(entry))
            except OSError:
                continue
    return found


@dataclass
class Network:
    """A bridge and hosts on it; `close()` removes all of it (also when a test failed)."""

    tag: str
    bridge: str
    subnet: ipaddress.IPv4Network
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def gateway_address(self) -> str:
        """The bridge's address: how the root namespace (the test) reaches the hosts."""
        return str(self.subnet.network_address + 254)

    def host(self, name: str) -> Host:
        return self.hosts[name]

    @classmethod
    def create(cls, names: list[str], shm_size: str = "512m") -> "Network":
        sweep_stale()
        tag = f"{PREFIX}{os.getpid()}"
        network = cls(tag=tag, bridge=f"{tag}br", subnet=_free_subnet())
        try:
            _ip("link", "add", network.bridge, "type", "bridge")
            _ip("addr", "add", f"{network.gateway_address}/24", "dev", network.bridge)
            _ip("link", "set", network.bridge, "up")
            for index, name in enumerate(names, start=1):
                network.hosts[name] = network._add_host(name, index, shm_size)
        except BaseException:
            network.close()
            raise
        return network

    def _add_host(self, name: str, index: int, shm_size: str) -> Host:
        netns, link = f"{self.tag}{chr(96 + index)}", f"{self.tag}{chr(96 + index)}h"
        host = Host(name=name, netns=netns, address=str(self.subnet.network_address + index), link=link)
        _ip("netns", "add", netns)
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", link, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        script = f"mount -t tmpfs -o size={shm_size},mode=1777 tmpfs /dev/shm && exec sleep 1000000"
        anchor = subprocess.Popen(["ip", "netns", "exec", netns, "unshare", "-m", "--propagation", "private",
                                   "sh", "-c", script], start_new_session=True)
        host.anchor_pid = anchor.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:     # the anchor is ready once it is `sleep` in its own /dev/shm
            if anchor.poll() is not None:
                raise RuntimeError(f"host {name}: mounting its /dev/shm failed")
            try:
                if os.readlink(f"/proc/{anchor.pid}/exe").endswith("sleep"):
                    break
            except OSError:
                pass
            time.sleep(0.02)
        return host

    def close(self) -> None:
        """Kill every process of every host, remove the namespaces, links and bridge. Never raises."""
        for host in self.hosts.values():
            if host.anchor_pid:
                try:
                    _kill_netns(host.net_inode())
                except OSError:
                    pass
                _reap(host.anchor_pid)
        for host in self.hosts.values():
            _ip("link", "del", host.link, check=False)
            _ip("netns", "del", host.netns, check=False)
        _ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> "Network":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _kill_netns(inode: int) -> None:
    """SIGCONT (a frozen host cannot die) then SIGKILL every process in the namespace, until none is left."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = pids_in_netns(inode)
        if not pids:
            return
        for pid in pids:
            for signum in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
        for pid in pids:
            _reap(pid)
        time.sleep(0.1)


def _reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def sweep_stale() -> None:
    """Remove namespaces and bridges left by test runs whose process is gone."""
    listing = [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.strip()]
    links = re.findall(r"^\d+:\s+([^:@\s]+)", _ip("-o", "link", check=False).stdout, re.M)
    for name in set(listing) | set(links):
        match = re.match(rf"{PREFIX}(\d+)", name)
        if not match or _alive(int(match.group(1))):
            continue
        if name in listing:
            path = Path("/run/netns") / name
            try:
                inode = os.stat(path).st_ino
                _kill_netns(inode)
            except OSError:
                pass
            _ip("netns", "del", name, check=False)
        else:
            _ip("link", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200-254.x.0 that no route on this machine overlaps."""
    routes = _ip("-4", "route", "show", "table", "all", check=False).stdout
    used = [ipaddress.ip_network(word, strict=False) for word in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?", routes)]
    seed = os.getpid()
    for step in range(2000):
        candidate = ipaddress.ip_network(f"10.{200 + (seed + step) % 55}.{(seed * 7 + step) % 256}.0/24")
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise RuntimeError("no free 10.x.y.0/24 subnet for the test network")


def supported() -> str | None:
    """None when this machine can make hosts, else why not (for a clear skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter", "unshare"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool} is not installed"
    return None
