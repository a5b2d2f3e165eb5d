"""The gateway takes new settings without a restart: on SIGHUP it reads the stack file again, resolves
the keys again (a rotated key file included) and swaps its keys, routes and limits, while every
connection and every request in flight goes on. Its listen address stays: a new host or port needs a
new socket, so `up` restarts it for those (they are on its command line).

Under supervisord it publishes what it runs with (baremetal.stack.settings), after its start and after
each reload; a reload that fails (an invalid stack file, a missing key file) keeps the previous settings
and says why there, and in its log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

from baremetal.config.model import Stack
from baremetal.errors import BaremetalError
from baremetal.stack.settings import digest_of, gateway_settings_hashed, publish, supervised_as

if TYPE_CHECKING:
    from baremetal.gateway.app import Gateway
    from baremetal.gateway.keys import KeyTable

log = logging.getLogger("baremetal.gateway")
PROGRAM = "api"


def settings_digest(stack: Stack, keys: "KeyTable") -> str:
    return digest_of(gateway_settings_hashed(stack, keys.hex_digests()))


def announce(gateway: "Gateway", error: str | None = None) -> None:
    """Publish the settings the gateway runs with (only as supervisord's `api`: a gateway run by hand to
    try a stack must not speak for the supervised one)."""
    if supervised_as(PROGRAM):
        try:
            publish(gateway.stack, PROGRAM, settings_digest(gateway.stack, gateway.keys), error,
                    pid=os.getppid() if gateway.worker else None)
        except OSError as failure:
            log.warning("cannot write the settings record: %s", failure)


def load_settings(gateway: "Gateway") -> tuple[Stack, "KeyTable"]:
    """The stack file read again (for the same node) and its keys resolved; raises BaremetalError."""
    from baremetal.config import load_stack
    from baremetal.gateway.keys import key_table

    stack = load_stack(gateway.stack.source, node=os.environ.get("BAREMETAL_NODE") or None)
    return stack, key_table(stack.api)


async def reload(gateway: "Gateway") -> None:
    """Read the settings again and take them; on failure keep the old ones and say why."""
    try:
        stack, keys = await asyncio.to_thread(load_settings, gateway)
    except BaremetalError as error:
        log.error("reload refused, keeping the previous settings: %s", error)
        announce(gateway, f"reload refused, the previous settings stay: {error}")
        return
    old = gateway.stack.api
    gateway.configure(stack, keys)
    if (stack.api.host, stack.api.port) != (old.host, old.port):
        log.warning("api.host/api.port changed to %s:%d: they apply at the next start (`baremetal up` restarts "
                    "the gateway for them)", stack.api.host, stack.api.port)
    log.info("reloaded: %d model(s) (%s), %s", len(gateway.routes), ", ".join(gateway.routes) or "none",
             keys.describe())
    announce(gateway)


def listen_for_reloads(gateway: "Gateway") -> None:
    """SIGHUP reloads (call from inside the running event loop)."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task] = set()

    def requested() -> None:
        task = loop.create_task(reload(gateway))
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, requested)
