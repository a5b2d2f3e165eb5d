"""Several gateway processes on one port (api.workers > 1), for when one event loop is the limit.

Each worker binds its own socket with SO_REUSEPORT and the kernel spreads the connections over them; the
parent only forks them (after resolving the keys, so a missing key file stops it at once), forwards
SIGTERM/SIGINT/SIGHUP, and restarts a worker that died (at most RESTARTS_PER_MINUTE, then it stops all
and exits 1, for supervisord to restart the program). Per-key limits are shared (shared_limits). /metrics
answers the sum over the workers: each writes its page to <root>/run/gateway-workers/worker-N.prom every
second, and the page of a worker that died is kept as a retired one, less its gauges, so that counters
never go down while the parent runs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from baremetal.host.files import atomic_write
from baremetal.metrics import prometheus

log = logging.getLogger("baremetal.gateway")
RESTARTS_PER_MINUTE = 5
WRITE_EVERY_S = 1.0


def reuseport_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening socket that other processes of this user may bind too (the kernel balances between them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(backlog)
    return sock


def worker_page(folder: Path, index: int) -> Path:
    return folder / f"worker-{index}.prom"


def retire(folder: Path, index: int) -> None:
    """Keep the counters of a worker that died (its gauges are gone with it)."""
    page = worker_page(folder, index)
    try:
        text = page.read_text(encoding="utf-8")
    except OSError:
        return
    atomic_write(folder / f"retired-{index}-{time.time_ns()}.prom", without_gauges(text), mode=0o600, durable=False)
    page.unlink(missing_ok=True)


def without_gauges(text: str) -> str:
    """The page less its gauge families."""
    kept, gauge = [], False
    for line in text.splitlines():
        if line.startswith("# HELP "):
            gauge = False
        if line.startswith("# TYPE "):
            gauge = line.split()[-1] == "gauge"
            if gauge and kept and kept[-1].startswith("# HELP "):
                kept.pop()
        if not gauge:
            kept.append(line)
    return "\n".join(kept) + "\n"


def merge_pages(pages: list[str]) -> str:
    """One exposition page whose samples are the sums of the pages' (counters, histogram buckets, gauges). Pure."""
    families: dict[str, dict] = {}
    for page in pages:
        current = None
        for line in page.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name = line.split()[2]
                current = families.setdefault(name, {"help": None, "type": None, "samples": {}})
                current["help" if line.startswith("# HELP ") else "type"] = line
            elif line and current is not None:
                series, _, value = line.rpartition(" ")
                try:
                    current["samples"][series] = current["samples"].get(series, 0.0) + float(value)
                except ValueError:
                    continue
    lines = []
    for family in families.values():
        lines += [header for header in (family["help"], family["type"]) if header]
        lines += [f"{series} {prometheus.number(value)}" for series, value in family["samples"].items()]
    return prometheus.page(lines)


def node_page(folder: Path, index: int, own: str) -> str:
    """This worker's live page summed with the other workers' last pages and the retired ones."""
    pages = [own]
    for path in sorted(folder.glob("*.prom")):
        if path != worker_page(folder, index):
            try:
                pages.append(path.read_text(encoding="utf-8"))
            except OSError:
                continue
    return merge_pages(pages)


def serve_workers(count: int, folder: Path, run_worker: Callable[[int], None]) -> None:
    """Fork `count` workers running `run_worker(index)` and keep them running until a stop signal."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in folder.glob("*.prom"):
        stale.unlink(missing_ok=True)
    children: dict[int, int] = {}
    stopping = failed = False
    restarts: list[float] = []

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            for number in (signal.SIGTERM, signal.SIGINT):
                signal.signal(number, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)     # until its event loop takes it (a reload)
            code = 0
            try:
                run_worker(index)
            except BaseException as error:  # noqa: BLE001 - the worker's end; the parent restarts it
                log.error("gateway worker %d failed: %r", index, error, exc_info=error)
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        children[pid] = index

    def forward(number: int, _frame) -> None:
        nonlocal stopping
        stopping = stopping or number != signal.SIGHUP
        for pid in list(children):
            try:
                os.kill(pid, number)
            except ProcessLookupError:
                pass

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, forward)
    for index in range(count):
        spawn(index)
    log.info("gateway: %d worker processes on one port (SO_REUSEPORT): pids %s", count, sorted(children))
    while children:
        pid, status = os.wait()
        index = children.pop(pid, None)
        if index is None or stopping:
            continue
        retire(folder, index)
        now = time.monotonic()
        restarts = [at for at in restarts if now - at < 60] + [now]
        if len(restarts) > RESTARTS_PER_MINUTE:
            log.error("gateway worker %d exited (status %d), the %dth restart within a minute: stopping all",
                      index, status, len(restarts))
            forward(signal.SIGTERM, None)
            stopping = failed = True
            continue
        log.warning("gateway worker %d (pid %d) exited (status %d); starting it again", index, pid, status)
        spawn(index)
    if failed:
        sys.exit(1)
