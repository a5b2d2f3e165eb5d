"""Why a backend must not get new requests: the watchdog's verdicts, read from <root>/run/watchdog.json
(written atomically by the watchdog), and planned stops, read from <root>/run/drain.json (written by
baremetal's CLI: baremetal.stack.drain). A draining program is skipped; its requests in flight finish.

Format: {"updated_s": epoch seconds, "programs": {PROGRAM: {"phase": ..., "healthy": bool, ...}}}.
A program with "healthy": false is skipped, except one still in phase "ready" (failing probes, not yet
stuck): that one is tried last, when no other backend of its model answers.
Read cheaply: the file is stat-ed at most every `check_interval_s` and parsed again only when its
mtime changes. A missing, unreadable or stale file (older than `stale_after_s`: the watchdog is not
running) means no verdicts: every backend is tried, connection failures still count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from baremetal.host.files import CachedJson
from baremetal.stack.drain import DrainEntry, active_drains

DRAIN_WORDS = {"restart": "restart", "stop": "stop", "update": "change (baremetal up)"}


@dataclass(frozen=True)
class Verdict:
    """The watchdog's word on a program it marks unhealthy."""

    phase: str
    why: str = ""

    @property
    def last_resort(self) -> bool:
        """Still `ready` but failing probes (not yet stuck): tried only when nothing else answers, so one
        slow probe on a lone replica does not turn into 503s."""
        return self.phase == "ready"

    @property
    def reason(self) -> str:
        return self.why or f"watchdog says {self.phase}"


def unhealthy_programs(document: Any, now_s: float, stale_after_s: float) -> dict[str, Verdict]:
    """PROGRAM -> verdict, for programs the watchdog marks unhealthy in a fresh document. Pure."""
    if not isinstance(document, dict):
        return {}
    updated = document.get("updated_s")
    if not isinstance(updated, (int, float)) or now_s - updated > stale_after_s:
        return {}
    programs = document.get("programs")
    if not isinstance(programs, dict):
        return {}
    return {name: Verdict(str(entry.get("phase") or "unhealthy")) for name, entry in programs.items()
            if isinstance(entry, dict) and entry.get("healthy") is False}


class VerdictReader:
    """Cached reader of watchdog.json; `unhealthy()` costs a dict lookup between checks."""

    def __init__(self, path: Path, stale_after_s: float = 30.0, check_interval_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.path = path
        self.stale_after_s = stale_after_s
        self.wall_clock = wall_clock
        self._file = CachedJson(path, check_interval_s, clock)
        self._checked_s: float | None = None
        self._unhealthy: dict[str, Verdict] = {}

    def unhealthy(self) -> Mapping[str, Verdict]:
        """PROGRAM -> verdict for the programs the watchdog marks unhealthy now."""
        document = self._file.document()
        if self._file.checked_s != self._checked_s:      # staleness moves with the clock: re-judge per check
            self._checked_s = self._file.checked_s
            self._unhealthy = unhealthy_programs(document, self.wall_clock(), self.stale_after_s)
        return self._unhealthy


class DrainReader:
    """Cached reader of drain.json (baremetal.stack.drain): the programs taken out of routing now."""

    def __init__(self, path: Path, check_interval_s: float = 0.25, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self._file = CachedJson(path, check_interval_s, clock)
        self.wall_clock = wall_clock
        self._checked_s: float | None = None
        self._draining: dict[str, DrainEntry] = {}

    def draining(self) -> Mapping[str, DrainEntry]:
        """PROGRAM -> its drain, for programs that must get no new requests."""
        document = self._file.document()
        if self._file.checked_s != self._checked_s:
            self._checked_s = self._file.checked_s
            self._draining = active_drains(document, self.wall_clock())
        return self._draining


class RoutingVerdicts:
    """Why backends must not get new requests: the watchdog's verdicts, and the drains of planned stops
    (a draining program is skipped like an unhealthy one, never tried last)."""

    def __init__(self, watchdog: VerdictReader, drains: DrainReader):
        self.watchdog = watchdog
        self.drains = drains
        self._sources: tuple[Any, Any] = (None, None)
        self._merged: Mapping[str, Verdict] = {}

    def unhealthy(self) -> Mapping[str, Verdict]:
        """PROGRAM -> verdict, drains included (phase "draining")."""
        sources = (self.watchdog.unhealthy(), self.drains.draining())
        if sources[0] is not self._sources[0] or sources[1] is not self._sources[1]:
            self._sources = sources
            merged = dict(sources[0])
            merged.update({name: Verdict("draining", "draining before a planned "
                                                      + DRAIN_WORDS.get(entry.reason, "stop"))
                           for name, entry in sources[1].items()})
            self._merged = merged
        return self._merged
