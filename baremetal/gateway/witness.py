"""The gateway as the watchdog's witness: per backend, the requests in flight and when each last received
a byte, published as <root>/run/gateway.json (the format: baremetal.stack.gateway_view).

The exchange opens a Ticket for each attempt at a backend and closes it when the attempt ends; the code
that reads a backend's answer calls `received()` for every chunk. The open ticket travels in a context
variable, so the FastChat worker client deep in the call chain needs no extra argument. `run()` (a task
on the gateway's event loop) rewrites the file within 0.25 s of a change, every 1 s while anything is in
flight or held, and every 5 s when idle, so that readers can tell a live gateway from a dead one.

With several gateway processes on one port (api.workers), each writes its own document to
<root>/run/gateway-workers/witness-N.json, and worker 0 writes gateway.json as their sum (`merged`),
rewritten too when another worker's file changes; a worker's file older than FRESH_S counts for nothing
(that worker died, and its requests with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterable, Mapping

from baremetal.host.files import atomic_write

MIN_WRITE_S = 0.25
BUSY_WRITE_S = 1.0
IDLE_WRITE_S = 5.0
FRESH_S = 10.0          # as baremetal.stack.gateway_view reads it


class BackendRecord:
    """What the gateway knows of one backend right now (mutable; one event loop, no locks)."""

    __slots__ = ("name", "model", "tickets", "busy_since_s", "last_byte_s", "last_request_s", "draining",
                 "available")

    def __init__(self, name: str, model: str):
        self.name, self.model = name, model
        self.tickets: set[Ticket] = set()
        self.busy_since_s: float | None = None
        self.last_byte_s: float | None = None
        self.last_request_s: float | None = None
        self.draining = False
        self.available = False                  # a new request could go to it now

    def to_json(self, now_s: float) -> dict:
        waits = [now_s - (ticket.last_byte_s or ticket.sent_s) for ticket in self.tickets]
        return {"model": self.model, "in_flight": len(self.tickets), "busy_since_s": _round(self.busy_since_s),
                "last_byte_s": _round(self.last_byte_s), "last_request_s": _round(self.last_request_s),
                "oldest_wait_s": round(max(waits, default=0.0), 3), "draining": self.draining,
                "available": self.available}


class Ticket:
    """One attempt at a backend, from the request sent to its end."""

    __slots__ = ("witness", "record", "sent_s", "last_byte_s", "_token")

    def __init__(self, witness: "Witness", record: BackendRecord, sent_s: float):
        self.witness, self.record, self.sent_s = witness, record, sent_s
        self.last_byte_s: float | None = None
        self._token = CURRENT.set(self)

    def byte(self) -> None:
        """Bytes of the answer arrived from the backend."""
        now = self.witness.clock()
        self.last_byte_s = self.record.last_byte_s = now

    def close(self) -> None:
        """The attempt is over (answered, failed, or the client left)."""
        try:
            CURRENT.reset(self._token)
        except ValueError:
            pass            # closed from another context than it was opened in: nothing to restore
        self.witness.closed(self)


CURRENT: ContextVar[Ticket | None] = ContextVar("baremetal_witness_ticket", default=None)


def received() -> None:
    """Note that bytes arrived for the attempt this task is serving (no-op outside one)."""
    ticket = CURRENT.get()
    if ticket is not None:
        ticket.byte()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Witness:
    """In-flight requests per backend and held requests per model, and the writer of gateway.json."""

    def __init__(self, path: Path, routes: Mapping[str, Iterable], draining: Callable[[], Mapping[str, object]],
                 routable: Callable[[], Iterable[str]] = lambda: (),
                 on_drained: Callable[[str, str], None] = lambda model, backend: None,
                 clock: Callable[[], float] = time.time, shared: tuple[int, Path] | None = None):
        self.path = Path(path)
        self.shared = shared                     # (this worker's index, the workers' folder) with api.workers > 1
        self._peers: tuple = ()                  # the other workers' files (name, mtime) at the last write
        self.draining = draining                 # PROGRAM -> drain entry (gateway.draining.DrainReader.draining: a set is enough)
        self.routable = routable                 # the backends a new request could go to now
        self.on_drained = on_drained             # (model, backend): a request finished on a draining backend
        self.clock = clock
        self.backends: dict[str, BackendRecord] = {backend.name: BackendRecord(backend.name, model) for model, backends
                                                   in routes.items() for backend in backends}
        self.held: dict[str, int] = {model: 0 for model in routes}
        self.dirty = True
        self.written_s = float("-inf")
        self._writer: ThreadPoolExecutor | None = None     # one thread: writes and the final removal in order

    def follow(self, routes: Mapping[str, Iterable], draining: Callable[[], Mapping[str, object]]) -> None:
        """A reload's routes: new backends appear, those no longer routed go once nothing is in flight."""
        self.draining = draining
        for model, backends in routes.items():
            self.held.setdefault(model, 0)
            for backend in backends:
                self.backends.setdefault(backend.name, BackendRecord(backend.name, model))
        routed = {backend.name for backends in routes.values() for backend in backends}
        for name in [name for name, record in self.backends.items() if name not in routed and not record.tickets]:
            del self.backends[name]
        self.dirty = True

    # -- hooks -----------------------------------------------------------------------------------
    def opened(self, backend) -> Ticket:
        """A request is being sent to `backend` (a routing.Backend); close the ticket when it ends."""
        record = self.backends.get(backend.name)
        if record is None:
            record = self.backends[backend.name] = BackendRecord(backend.name, backend.model)
        now = self.clock()
        if not record.tickets:
            record.busy_since_s = now
        record.last_request_s = now
        ticket = Ticket(self, record, now)
        record.tickets.add(ticket)
        self.dirty = True
        return ticket

    def closed(self, ticket: Ticket) -> None:
        record = ticket.record
        record.tickets.discard(ticket)
        if not record.tickets:
            record.busy_since_s = None
        if record.draining:
            self.on_drained(record.model, record.name)
        self.dirty = True

    def hold_started(self, model: str) -> None:
        """A request for `model` waits for a replica (hold instead of 503)."""
        self.held[model] = self.held.get(model, 0) + 1
        self.dirty = True

    def hold_ended(self, model: str) -> None:
        self.held[model] = max(0, self.held.get(model, 0) - 1)
        self.dirty = True

    # -- the file ----------------------------------------------------------------------------------
    def refresh_routing(self) -> None:
        """Mark the backends that drain.json takes out of routing, and those a new request could go to."""
        draining, routable = self.draining(), set(self.routable())
        for name, record in self.backends.items():
            flags = (name in draining, name in routable)
            if flags != (record.draining, record.available):
                record.draining, record.available = flags
                self.dirty = True

    def document(self, now_s: float) -> dict:
        return {"updated_s": round(now_s, 3), "pid": os.getpid(),
                "backends": {name: record.to_json(now_s) for name, record in self.backends.items()},
                "models": {model: {"held": count} for model, count in self.held.items()}}

    def due(self, now_s: float) -> bool:
        """Whether to rewrite the file now."""
        age = now_s - self.written_s
        busy = any(record.tickets for record in self.backends.values()) or any(self.held.values())
        return age >= IDLE_WRITE_S or (age >= BUSY_WRITE_S and busy) or (age >= MIN_WRITE_S and self.dirty)

    def snapshot(self, now_s: float) -> bytes:
        """The document to write now, encoded; the state counts as written."""
        self.dirty, self.written_s = False, now_s
        return json.dumps(self.document(now_s), separators=(",", ":")).encode()

    async def run(self, tick_s: float = MIN_WRITE_S) -> None:
        """Keep gateway.json current until cancelled; the writes themselves run in a thread of their own
        (a slow disk must not stall the event loop)."""
        loop = asyncio.get_running_loop()
        self._writer = self._writer or ThreadPoolExecutor(max_workers=1, thread_name_prefix="witness")
        while True:
            self.refresh_routing()
            now = self.clock()
            peers = self._peer_files() if self.shared is not None and self.shared[0] == 0 else ()
            if self.due(now) or peers != self._peers:
                self._peers = peers
                data = self.snapshot(now)
                try:
                    await loop.run_in_executor(self._writer, self._publish, data, now)
                except OSError:
                    pass            # a full or read-only disk must not stop the gateway; the next write retries
            await asyncio.sleep(tick_s)

    def _publish(self, data: bytes, now_s: float) -> None:
        """Write this process's document: gateway.json, or with workers its own file (worker 0: and the sum)."""
        if self.shared is None:
            atomic_write(self.path, data, 0o640, False)
            return
        index, folder = self.shared
        atomic_write(folder / f"witness-{index}.json", data, 0o640, False)
        if index == 0:
            documents = [json.loads(data)]
            for name, _ in self._peers:
                try:
                    documents.append(json.loads((folder / name).read_bytes()))
                except (OSError, ValueError):
                    pass        # a worker rewriting or gone: its next write counts
            atomic_write(self.path, json.dumps(merged(documents, now_s), separators=(",", ":")).encode(), 0o640,
                         False)

    def _peer_files(self) -> tuple:
        """The other workers' witness files with their mtimes (a change means a write is due)."""
        index, folder = self.shared
        found = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("witness-") and entry.name != f"witness-{index}.json":
                        with contextlib.suppress(OSError):
                            found.append((entry.name, entry.stat().st_mtime_ns))
        except OSError:
            return ()
        return tuple(sorted(found))

    def close(self) -> None:
        """At shutdown, after `run` is cancelled: remove the file (no file means no gateway: readers wait for
        nothing), after any write still under way."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        if self.shared is not None:
            with contextlib.suppress(OSError):
                (self.shared[1] / f"witness-{self.shared[0]}.json").unlink()
        try:
            if json.loads(self.path.read_bytes()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError, AttributeError):
            pass


def merged(documents: list[dict], now_s: float) -> dict:
    """One gateway.json for several workers' documents (the first is the writer's own): requests in flight
    and held added up, the latest byte and request, the earliest busy start, the longest wait; a backend
    drains or is available when any worker says so. Documents older than FRESH_S are left out. Pure."""
    fresh = [d for d in documents if isinstance(d, dict) and isinstance(d.get("updated_s"), (int, float))
             and now_s - d["updated_s"] <= FRESH_S]
    backends: dict[str, dict] = {}
    held: dict[str, int] = {}
    for document in fresh:
        for name, entry in (document.get("backends") or {}).items():
            have = backends.get(name)
            if have is None:
                backends[name] = dict(entry)
                continue
            have["in_flight"] = have.get("in_flight", 0) + entry.get("in_flight", 0)
            for key, pick in (("busy_since_s", min), ("last_byte_s", max), ("last_request_s", max)):
                values = [v for v in (have.get(key), entry.get(key)) if v is not None]
                have[key] = pick(values) if values else None
            have["oldest_wait_s"] = max(have.get("oldest_wait_s", 0.0), entry.get("oldest_wait_s", 0.0))
            have["draining"] = bool(have.get("draining")) or bool(entry.get("draining"))
            have["available"] = bool(have.get("available")) or bool(entry.get("available"))
        for model, entry in (document.get("models") or {}).items():
            held[model] = held.get(model, 0) + int((entry or {}).get("held", 0))
    return {"updated_s": round(now_s, 3), "pid": os.getpid(), "backends": backends,
            "models": {model: {"held": count} for model, count in held.items()}}
