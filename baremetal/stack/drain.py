"""<root>/run/drain.json: programs taken out of routing before a planned stop, and the changes that
baremetal's CLI is making to programs. Written by the CLI (`restart`, `stop`, `down PROGRAM`, `up`),
read by the gateway and the watchdog.

    {"updated_s": epoch,
     "programs": {PROGRAM: {"since_s": epoch, "until_s": epoch (the drain deadline),
                            "reason": "restart" | "stop" | "update"}},
     "changes":  {PROGRAM: {"since_s": epoch, "reason": ..., "started_s": epoch | null,
                            "done_s": epoch | null}}}

"programs" is the gateway's part: a program listed there gets no new requests and its requests in
flight finish; readers ignore an entry past until_s + 60 s, so a CLI that crashed cannot drain a program
forever. "changes" is the watchdog's: an operator is changing the program, so the watchdog keeps its
hands off it until done_s, and the process started at started_s is not a restart of its budget.
Changes done for more than 10 minutes are pruned. Writers hold <root>/run/drain.lock around each
read-modify-write; the file itself is replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from baremetal.host.files import atomic_write

Reason = Literal["restart", "stop", "update"]
EXPIRED_AFTER_S = 60.0          # past until_s: the drain is over for readers, whatever the file says
PRUNE_DONE_AFTER_S = 600.0      # a change done this long ago is forgotten
OPERATOR_START_SLACK_S = 60.0   # a process started this long after started_s is no longer the operator's


@dataclass(frozen=True)
class DrainEntry:
    """A program that gets no new requests."""

    since_s: float
    until_s: float
    reason: str


@dataclass(frozen=True)
class Change:
    """A program that baremetal's CLI is changing (or changed recently)."""

    since_s: float
    reason: str
    started_s: float | None = None
    done_s: float | None = None

    def active(self, now_s: float, max_s: float) -> bool:
        """Still being changed: not done, and begun less than `max_s` ago (a crashed CLI lets go)."""
        return self.done_s is None and now_s - self.since_s < max_s

    def started_process(self, process_start_s: float) -> bool:
        """True when a process that started at `process_start_s` is the one this change started."""
        return (self.started_s is not None
                and self.started_s - 1.0 <= process_start_s <= self.started_s + OPERATOR_START_SLACK_S)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def active_drains(document: Any, now_s: float) -> dict[str, DrainEntry]:
    """PROGRAM -> drain, for the entries still in force at `now_s`. Pure; tolerates any document."""
    programs = document.get("programs") if isinstance(document, dict) else None
    found = {}
    for name, entry in (programs or {}).items() if isinstance(programs, dict) else ():
        if not isinstance(entry, dict):
            continue
        since, until = _number(entry.get("since_s")), _number(entry.get("until_s"))
        if since is None or until is None or now_s > until + EXPIRED_AFTER_S:
            continue
        found[name] = DrainEntry(since, until, str(entry.get("reason") or "restart"))
    return found


def changes(document: Any) -> dict[str, Change]:
    """PROGRAM -> the CLI's change of it (active or recently done). Pure; tolerates any document."""
    table = document.get("changes") if isinstance(document, dict) else None
    found = {}
    for name, entry in (table or {}).items() if isinstance(table, dict) else ():
        if isinstance(entry, dict) and (since := _number(entry.get("since_s"))) is not None:
            found[name] = Change(since, str(entry.get("reason") or "restart"), _number(entry.get("started_s")),
                                 _number(entry.get("done_s")))
    return found


def read_document(path: Path) -> dict:
    """The file's content, {} when it is missing or unreadable."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


class DrainFile:
    """The CLI's writer of drain.json; each method is one locked read-modify-write."""

    def __init__(self, path: Path, clock=time.time):
        self.path = Path(path)
        self.clock = clock

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.path.with_name("drain.lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                document = read_document(self.path)
                programs = document.get("programs") if isinstance(document.get("programs"), dict) else {}
                table = document.get("changes") if isinstance(document.get("changes"), dict) else {}
                edited = {"programs": dict(programs), "changes": dict(table)}
                yield edited
                now = self.clock()
                edited["changes"] = {name: entry for name, entry in edited["changes"].items()
                                     if not (isinstance(entry, dict) and isinstance(entry.get("done_s"), (int, float))
                                             and now - entry["done_s"] > PRUNE_DONE_AFTER_S)}
                atomic_write(self.path, json.dumps({"updated_s": round(now, 3), **edited}, separators=(",", ":")),
                             mode=0o600, durable=False)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def begin(self, programs: list[str], reason: Reason, drained: list[str], drain_timeout_s: float) -> float:
        """Record that `programs` are being changed, and take `drained` (some of them) out of routing
        until now + drain_timeout_s. Returns the time it was written."""
        now = self.clock()
        if not programs:
            return now
        with self._editing() as document:
            for name in programs:
                document["changes"][name] = {"since_s": now, "reason": reason, "started_s": None, "done_s": None}
            for name in drained:
                document["programs"][name] = {"since_s": now, "until_s": now + drain_timeout_s, "reason": reason}
        return now

    def starting(self, programs: list[str]) -> None:
        """`programs` are about to be started by the CLI: their next process is the operator's."""
        now = self.clock()
        if not programs:
            return
        with self._editing() as document:
            for name in programs:
                entry = document["changes"].get(name)
                # A start with no change begun (added, or stopped before): a record of the start only.
                entry = dict(entry) if isinstance(entry, dict) else {"since_s": now, "reason": "restart", "done_s": now}
                document["changes"][name] = entry | {"started_s": now}

    def finish(self, programs: list[str]) -> None:
        """The change of `programs` is over (ready again, or stopped for good): back in routing."""
        now = self.clock()
        if not programs:
            return
        with self._editing() as document:
            for name in programs:
                document["programs"].pop(name, None)
                entry = document["changes"].get(name)
                if isinstance(entry, dict):
                    document["changes"][name] = dict(entry) | {"done_s": now}

