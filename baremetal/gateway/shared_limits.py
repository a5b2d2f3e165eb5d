"""Per-key limits shared by several gateway processes on one port (api.workers > 1): the same one-second
buckets as baremetal.gateway.limits, kept in one memory map that every worker sees, so a key's limits hold
for the node, whichever process the kernel hands a connection to.

The map is made by the parent before it forks the workers (an unlinked file under <root>/run, mode 0600):
one slot per limited key name, each `in_flight` then WINDOW_S (second, count) pairs for requests and as
many for tokens, all int64. Every read-decide-write is done under a POSIX record lock (fcntl.lockf): it is
held per process, so forked workers exclude each other, and the kernel releases it when a worker dies,
so one killed mid-request cannot block the others. A key name not in the map at fork time (added by a
reload) is limited by its worker alone.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Callable

from baremetal.gateway.keys import KeyIdentity, KeyTable
from baremetal.gateway.limits import WINDOW_S, Limiter, Refusal, add, refusal

_RING = 2 * WINDOW_S                   # int64 values per ring
_SLOT = 1 + 2 * _RING                  # in_flight, requests ring, tokens ring
_SLOT_BYTES = 8 * _SLOT
_FORMAT = struct.Struct(f"{_SLOT}q")


class SharedLimiter:
    """Limiter over a shared memory map; the same admit/finish as limits.Limiter."""

    def __init__(self, names: list[str], folder: Path, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.slots = {name: index for index, name in enumerate(sorted(set(names)))}
        self.local = Limiter(clock)          # for names that have no slot
        self._file = tempfile.TemporaryFile(dir=folder)       # unlinked at once; mode 0600
        size = max(1, len(self.slots)) * _SLOT_BYTES
        self._file.truncate(size)
        self.map = mmap.mmap(self._file.fileno(), size)
        for index in self.slots.values():
            _FORMAT.pack_into(self.map, index * _SLOT_BYTES, *([0] + [-1, 0] * (2 * WINDOW_S)))

    @classmethod
    def for_table(cls, keys: KeyTable, folder: Path) -> "SharedLimiter":
        """One slot per limited key name of the table."""
        return cls([identity.name for _, identity in keys.entries if identity.limited], folder)

    def _locked(self, index: int, change: Callable[[list[int]], Refusal | None]) -> Refusal | None:
        fd = self._file.fileno()
        offset = index * _SLOT_BYTES
        fcntl.lockf(fd, fcntl.LOCK_EX, _SLOT_BYTES, offset, os.SEEK_SET)
        try:
            values = list(_FORMAT.unpack_from(self.map, offset))
            outcome = change(values)
            _FORMAT.pack_into(self.map, offset, *values)
            return outcome
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, _SLOT_BYTES, offset, os.SEEK_SET)

    def admit(self, identity: KeyIdentity) -> Refusal | None:
        """Count the request in, or say which limit refuses it (then nothing is counted)."""
        if not identity.limited:
            return None
        index = self.slots.get(identity.name)
        if index is None:
            return self.local.admit(identity)
        now = self.clock()

        def decide(values: list[int]) -> Refusal | None:
            requests, tokens = _rings(values)
            refused = refusal(identity, values[0], requests, tokens, now)
            if refused is None:
                add(requests, now, 1)
                values[0] += 1
                _store(values, requests, tokens)
            return refused

        return self._locked(index, decide)

    def finish(self, identity: KeyIdentity, tokens: int) -> None:
        """An admitted request ended having used `tokens` (prompt + completion)."""
        if not identity.limited:
            return
        index = self.slots.get(identity.name)
        if index is None:
            self.local.finish(identity, tokens)
            return
        now = self.clock()

        def book(values: list[int]) -> None:
            requests, used_tokens = _rings(values)
            values[0] = max(0, values[0] - 1)
            if tokens > 0:
                add(used_tokens, now, tokens)
            _store(values, requests, used_tokens)

        self._locked(index, book)


def _rings(values: list[int]) -> tuple[list[list[int]], list[list[int]]]:
    flat_requests, flat_tokens = values[1:1 + _RING], values[1 + _RING:]
    return ([list(flat_requests[i:i + 2]) for i in range(0, _RING, 2)],
            [list(flat_tokens[i:i + 2]) for i in range(0, _RING, 2)])


def _store(values: list[int], requests: list[list[int]], tokens: list[list[int]]) -> None:
    values[1:] = [number for bucket in requests + tokens for number in bucket]
