"""TCP ports: is one free to listen on, and who listens there. Checked before programs start (`up`,
`doctor`), so that a busy port is reported as such instead of as a program that keeps crashing."""

from __future__ import annotations

import contextlib
import errno
import socket
from dataclasses import dataclass

import psutil

BUSY_ERRNOS = (errno.EADDRINUSE, errno.EACCES)


def port_in_use(bind_host: str | None, port: int) -> bool:
    """True when a server binding `bind_host`:`port` now would fail because the port is taken.

    Binds as the server would (the same address, SO_REUSEADDR), so sockets in TIME_WAIT from a program
    that just stopped do not count, and a wildcard address sees a listener on any address."""
    address = (bind_host or "127.0.0.1").strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as error:
            return error.errno in BUSY_ERRNOS
    return False


@dataclass(frozen=True)
class Listener:
    """The process listening on a port, as far as the system lets us see it."""

    pid: int | None                  # None: a process of another user
    command: str                     # "" when not visible
    lineage: tuple[int, ...] = ()    # its pid and its ancestors', to tell a program's own child apart


def listener(port: int) -> Listener | None:
    """Who listens on TCP `port` (any address), or None when nothing visible does."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    for connection in connections:
        if connection.status != psutil.CONN_LISTEN or not connection.laddr or connection.laddr.port != port:
            continue
        if connection.pid is None:
            return Listener(None, "")
        try:
            process = psutil.Process(connection.pid)
            lineage = tuple(p.pid for p in [process] + process.parents())
            return Listener(connection.pid, " ".join(process.cmdline())[:120], lineage)
        except psutil.Error:
            return Listener(connection.pid, "")
    return None


def port_holder(port: int) -> str | None:
    """"pid N (command)" of the process listening on `port`, for messages."""
    with contextlib.suppress(OSError):
        found = listener(port)
        if found is None:
            return None
        if found.pid is None:
            return "a process of another user"
        return f"pid {found.pid} ({found.command})" if found.command else f"pid {found.pid}"
    return None
