"""Follow many programs' log files at once, line by line (`baremetal logs -f` with no program).

One loop polls every file (a read and two stats each, no thread per file), follows each through
supervisord's rotation (see logtail.FileFollower), and hands out whole lines tagged with their program
and stream. A line that stays unfinished (a progress bar redrawn with `\\r`) is handed out after
`partial_after_s` rather than held back forever.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

from baremetal.supervisord.logtail import FileFollower

Stream = Literal["stdout", "stderr"]
MAX_PENDING_BYTES = 64 * 1024


@dataclass(frozen=True)
class LogSource:
    """One log file of one program."""

    program: str
    stream: Stream
    path: Path


def program_logs(logs_dir: Path, programs: list[str], streams: tuple[Stream, ...]) -> list[LogSource]:
    """The log files of `programs` under `logs_dir` (supervisord's names: PROGRAM.log, PROGRAM.err.log)."""
    suffix = {"stdout": ".log", "stderr": ".err.log"}
    return [LogSource(name, stream, Path(logs_dir) / f"{name}{suffix[stream]}")
            for name in programs for stream in streams]


class _LineReader:
    """Whole lines appended to one source's file."""

    def __init__(self, source: LogSource, start_at_end: bool):
        self.source = source
        self.follower = FileFollower(source.path, start_at_end)
        self.pending = b""
        self.pending_since_s = 0.0

    def lines(self, now_s: float, partial_after_s: float) -> list[bytes]:
        """The whole lines appended since the last call (and an unfinished one that waited long enough)."""
        data = self.follower.read()
        if data:
            if not self.pending:
                self.pending_since_s = now_s
            self.pending += data
        *complete, rest = self.pending.split(b"\n")
        if complete:
            self.pending_since_s = now_s
        self.pending = rest
        if rest and (now_s - self.pending_since_s >= partial_after_s or len(rest) > MAX_PENDING_BYTES):
            complete.append(rest)
            self.pending = b""
        return complete


class LogFollower:
    """Lines appended to any of `sources` from the moment it is made (make it before printing what the
    files already hold, so that nothing written in between is lost). Files that do not exist yet are
    waited for and read from their start."""

    def __init__(self, sources: list[LogSource], partial_after_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self._readers = [_LineReader(source, start_at_end=True) for source in sources]
        self._partial_after_s = partial_after_s
        self._clock = clock

    def poll(self) -> list[tuple[LogSource, bytes]]:
        """(source, line without its newline) for what was appended since the last poll; never blocks."""
        now_s = self._clock()
        return [(reader.source, line) for reader in self._readers
                for line in reader.lines(now_s, self._partial_after_s)]

    def lines(self, stop: Callable[[], bool], interval_s: float = 0.2,
              sleep: Callable[[float], None] = time.sleep) -> Iterator[tuple[LogSource, bytes]]:
        """poll() until `stop()`, sleeping `interval_s` whenever nothing was appended."""
        while not stop():
            found = self.poll()
            yield from found
            if not found:
                sleep(interval_s)

    def close(self) -> None:
        """Close every file."""
        for reader in self._readers:
            reader.follower.close()
