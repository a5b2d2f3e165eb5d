"""Free TCP ports: tests never hard-code one, so helpers and suites can run side by side."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that nothing listens on now (held together while chosen, so a stack's
    programs never get the same one twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()
