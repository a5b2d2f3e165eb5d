"""Is a TCP port free to listen on, and who holds it: checked before programs start, so that a busy port
is reported as such instead of as a program that keeps crashing."""

from __future__ import annotations

import contextlib
import errno
import socket

import psutil

from baremetal.config.model import connect_host


def port_in_use(host: str | None, port: int) -> bool:
    """True when nothing can listen on host:port now (another process listens there).

    Binds with SO_REUSEADDR as servers do, so sockets in TIME_WAIT from a program that just stopped do
    not count. A wildcard host is checked as 127.0.0.1, which a listener on 0.0.0.0 also blocks.
    """
    address = connect_host(host or "127.0.0.1").strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def port_holder(port: int) -> str | None:
    """"pid N (command)" of the process listening on `port`, when the system lets us see it."""
    with contextlib.suppress(psutil.AccessDenied, OSError):
        for connection in psutil.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
                if connection.pid is None:
                    return "a process of another user"
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    command = " ".join(psutil.Process(connection.pid).cmdline())[:120]
                    return f"pid {connection.pid} ({command})"
                return f"pid {connection.pid}"
    return None
