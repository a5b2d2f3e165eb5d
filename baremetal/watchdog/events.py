"""The watchdog's event log: what it saw and did, one JSON object per line, bounded by rotation.

<root>/logs/events.jsonl holds the newest events; when it passes `max_bytes` it becomes events.jsonl.1
(and .1 becomes .2, up to `backups`), so the log never grows without bound. `baremetal events` reads
them back, oldest first, and can follow the file like `tail -F`.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from baremetal.supervisord.logtail import follow_chunks

EVENTS_FILE = "events.jsonl"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3


def events_path(root: Path) -> Path:
    """Where a stack's events are written."""
    return Path(root) / "logs" / EVENTS_FILE


@dataclass(frozen=True)
class Event:
    """One thing the watchdog saw or did. `kind` is a phase (ready, stuck, given_up, ...) or an act."""

    time_s: float
    kind: str
    message: str
    program: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        stamp = datetime.fromtimestamp(self.time_s).astimezone().isoformat(timespec="milliseconds")
        return {"time": stamp, "time_s": round(self.time_s, 3), "kind": self.kind, "program": self.program,
                "message": self.message, **self.details}


class EventLog:
    """Appends events to the log file, rotating it past `max_bytes`. Safe to share between threads."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()

    def write(self, event: Event) -> None:
        """Append one event (one line, flushed); errors writing it are printed, never raised."""
        line = json.dumps(event.to_json(), default=str, ensure_ascii=False) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                    self._rotate()
                with open(self.path, "a", encoding="utf-8") as stream:
                    stream.write(line)
            except OSError as error:
                print(f"baremetal watchdog: cannot write {self.path}: {error}", flush=True)

    def _rotate(self) -> None:
        for number in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()


def _parse(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None            # a line being written right now, or damaged: skip it
    return value if isinstance(value, dict) else None


def read_events(path: Path, limit: int | None = None, backups: int = BACKUPS) -> list[dict]:
    """The events in the log and its rotated files, oldest first; the last `limit` of them if given."""
    path = Path(path)
    files = [path.with_name(f"{path.name}.{n}") for n in range(backups, 0, -1)] + [path]
    events: list[dict] = []
    for file in files:
        try:
            lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        events += [event for event in map(_parse, lines) if event is not None]
    return events[-limit:] if limit else events


def follow(path: Path, stop: Callable[[], bool] = lambda: False, poll_s: float = 0.5) -> Iterator[dict]:
    """New events as they are written (from the end of the file), across rotations, until `stop()`."""
    buffer = b""
    for chunk in follow_chunks(Path(path), stop, start_at_end=True, interval_s=poll_s):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            event = _parse(line.decode("utf-8", errors="replace"))
            if event is not None:
                yield event


def format_event(event: Mapping[str, Any]) -> str:
    """One line for people: local time, program, kind, message."""
    stamp = datetime.fromtimestamp(float(event.get("time_s", 0))).strftime("%Y-%m-%d %H:%M:%S")
    line = f"{stamp}  {event.get('program') or '-':<20} {event.get('kind', '?'):<14} {event.get('message', '')}"
    if event.get("evidence") and event.get("kind") != "restarted":
        line += f"  [evidence: {Path(str(event['evidence'])).name}]"
    return line
