"""Programs being drained before a planned stop, read from <root>/run/drain.json (written by baremetal's CLI).

Format: {"updated_s": epoch, "programs": {PROGRAM: {"since_s", "until_s" (drain deadline), "reason"}}}.
A program listed there gets no new requests (its requests in flight finish); when it is the only
backend of its model, new requests are held until it is back. An entry past its `until_s` by more
than 60 s is ignored: a CLI that crashed must not keep a program out of routing forever. A missing or
unreadable file means nothing drains.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from baremetal.host.files import CachedJson

FORGET_AFTER_DEADLINE_S = 60.0


def draining_programs(document: Any, now_s: float) -> frozenset[str]:
    """The programs that take no new requests now. Pure."""
    programs = document.get("programs") if isinstance(document, dict) else None
    if not isinstance(programs, dict):
        return frozenset()
    out = set()
    for name, entry in programs.items():
        if not isinstance(entry, dict):
            continue
        until = entry.get("until_s")
        if isinstance(until, (int, float)) and not isinstance(until, bool) and now_s > until + FORGET_AFTER_DEADLINE_S:
            continue
        out.add(name)
    return frozenset(out)


class DrainReader:
    """Cached reader of drain.json."""

    def __init__(self, path: Path, check_interval_s: float = 0.25, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.wall_clock = wall_clock
        self._file = CachedJson(path, check_interval_s, clock)
        self._draining: frozenset[str] = frozenset()

    def draining(self) -> frozenset[str]:
        """The programs listed in drain.json now (entries long past their deadline left out)."""
        checks = self._file.checks
        document = self._file.document()
        if self._file.checks != checks:                  # stat-ed again just now: derive again
            self._draining = draining_programs(document, self.wall_clock())
        return self._draining
