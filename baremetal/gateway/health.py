"""The watchdog's verdicts, read from <root>/run/watchdog.json (written atomically by the watchdog).

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


@dataclass(frozen=True)
class Verdict:
    """The watchdog's word on a program it marks unhealthy."""

    phase: str

    @property
    def last_resort(self) -> bool:
        """Still `ready` but failing probes (not yet stuck): tried only when nothing else answers, so one
        slow probe on a lone replica does not turn into 503s."""
        return self.phase == "ready"

    @property
    def for_good(self) -> bool:
        """Down until an operator acts (stopped, given up, a hardware fault): not worth holding requests for."""
        return self.phase in ("stopped", "given_up", "hardware_fault")

    @property
    def reason(self) -> str:
        return f"watchdog says {self.phase}"


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
        self._unhealthy: dict[str, Verdict] = {}

    def unhealthy(self) -> Mapping[str, Verdict]:
        """PROGRAM -> verdict for the programs the watchdog marks unhealthy now."""
        checks = self._file.checks
        document = self._file.document()
        if self._file.checks != checks:                  # stat-ed again just now: derive again
            self._unhealthy = unhealthy_programs(document, self.wall_clock(), self.stale_after_s)
        return self._unhealthy
