"""The small JSON files other programs publish under <root>/run for the gateway (watchdog.json,
drain.json), read cheaply: stat-ed at most every `check_interval_s`, parsed again only when the file's
mtime changes. A missing, unreadable or half-written file reads as None (no news)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable


class CachedDocument:
    """One JSON file, re-read when it changes; `read()` costs a clock read between checks."""

    def __init__(self, path: Path, check_interval_s: float = 0.25, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.check_interval_s = check_interval_s
        self.clock = clock
        self._checked_s = float("-inf")
        self._mtime_ns: int | None = None
        self.document: Any = None

    def read(self) -> tuple[Any, bool]:
        """(the document or None, whether it was checked again just now: callers re-derive then)."""
        now = self.clock()
        if now - self._checked_s < self.check_interval_s:
            return self.document, False
        self._checked_s = now
        try:
            mtime_ns = os.stat(self.path).st_mtime_ns
        except OSError:
            self._mtime_ns, self.document = None, None
            return None, True
        if mtime_ns != self._mtime_ns:
            try:
                self.document = json.loads(self.path.read_bytes())
                self._mtime_ns = mtime_ns
            except (OSError, ValueError):
                self.document = None   # mid-replace or corrupt: no news until the next good write
        return self.document, True
