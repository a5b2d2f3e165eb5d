"""Read program logs from their files, as `tail` does: the last lines, and following through rotation.

supervisord rotates a log by renaming it to NAME.1 (after shifting older ones) and opening a new NAME;
a follower that keeps reading the old descriptor would go silent, so `follow` notices the new file,
drains the old one, and goes on with the new one from its start.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

BLOCK_BYTES = 64 * 1024


def reverse_lines(path: Path, max_bytes: int | None = None) -> Iterator[bytes]:
    """The lines of a file, newest first, reading blocks from its end (a 50 MB log costs what is read).
    Stops after `max_bytes` when given."""
    with open(path, "rb") as stream:
        position = stream.seek(0, os.SEEK_END)
        read_bytes, rest = 0, b""
        while position > 0:
            size = min(BLOCK_BYTES, position)
            position -= size
            stream.seek(position)
            block = stream.read(size) + rest
            read_bytes += size
            lines = block.split(b"\n")
            rest = lines.pop(0)
            yield from reversed(lines)
            if max_bytes is not None and read_bytes >= max_bytes:
                return
        yield rest


def last_lines(path: Path, count: int) -> list[bytes]:
    """The last `count` lines of a file (without newlines); [] when it does not exist."""
    if count <= 0:
        return []
    found: list[bytes] = []
    try:
        for index, line in enumerate(reverse_lines(path)):
            if index == 0 and line == b"":
                continue          # the file ends with a newline
            found.append(line)
            if len(found) >= count:
                break
    except FileNotFoundError:
        return []
    return list(reversed(found))


def last_text(path: Path, count: int) -> str:
    """The last `count` lines as text, for error messages."""
    return "\n".join(line.decode("utf-8", errors="replace") for line in last_lines(path, count))


class FileFollower:
    """What is appended to one file since the last look, as `tail -F` sees it: it follows rotation (the
    file renamed and a new one opened under the name) and truncation. A file that does not exist yet is
    waited for, and read from its start once it appears. `read` never blocks."""

    def __init__(self, path: Path, start_at_end: bool = True):
        self.path = Path(path)
        self._stream = _open(self.path)
        if self._stream is not None and start_at_end:
            self._stream.seek(0, os.SEEK_END)

    def read(self, max_bytes: int = 1 << 20) -> bytes:
        """Everything new since the last call (b"" when nothing), at most about `max_bytes` at a time."""
        chunks: list[bytes] = []
        size = 0
        while size < max_bytes:
            if self._stream is None:
                self._stream = _open(self.path)
                if self._stream is None:
                    break
            data = self._stream.read(max_bytes - size)
            if data:
                chunks.append(data)
                size += len(data)
                continue
            replaced = _replaced(self.path, self._stream)
            if replaced == "rotated":
                rest = self._stream.read()   # what was written just before the rename
                if rest:
                    chunks.append(rest)
                    size += len(rest)
                self._stream.close()
                self._stream = _open(self.path)
                continue
            if replaced == "truncated":
                self._stream.seek(0)
                continue
            break
        return b"".join(chunks)

    def close(self) -> None:
        """Close the file being read."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def follow_chunks(path: Path, stop: Callable[[], bool], start_at_end: bool = True,
                  interval_s: float = 0.2) -> Iterator[bytes]:
    """What is appended to `path`, chunk by chunk, until `stop()` is true (see FileFollower)."""
    follower = FileFollower(path, start_at_end)
    try:
        while not stop():
            data = follower.read()
            if data:
                yield data
                continue
            time.sleep(interval_s)
    finally:
        follower.close()


def follow(path: Path, write: Callable[[bytes], None], stop: threading.Event, start_at_end: bool = True,
           interval_s: float = 0.2) -> None:
    """Copy what is appended to `path` to `write` until `stop` is set (see `follow_chunks`)."""
    for chunk in follow_chunks(path, stop.is_set, start_at_end, interval_s):
        write(chunk)


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _replaced(path: Path, stream) -> str | None:
    """"rotated" when `path` is now another file (or gone), "truncated" when it shrank below our offset."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return None          # renamed and not yet reopened: keep the old one until the new one appears
    opened = os.fstat(stream.fileno())
    if (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
        return "rotated"
    if current.st_size < stream.tell():
        return "truncated"
    return None

