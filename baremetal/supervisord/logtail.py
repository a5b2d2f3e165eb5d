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


def follow_chunks(path: Path, stop: Callable[[], bool], start_at_end: bool = True,
                  interval_s: float = 0.2) -> Iterator[bytes]:
    """What is appended to `path`, chunk by chunk, until `stop()` is true, following rotation (the file
    renamed and a new one opened under the name) and truncation, as `tail -F` does. A file that does not
    exist yet is waited for, and read from its start once it appears."""
    stream = _open(path)
    if stream is not None and start_at_end:
        stream.seek(0, os.SEEK_END)
    try:
        while not stop():
            if stream is None:
                stream = _open(path)
                if stream is None:
                    time.sleep(interval_s)
                    continue
            data = stream.read()
            if data:
                yield data
                continue
            replaced = _replaced(path, stream)
            if replaced == "rotated":
                rest = stream.read()   # what was written just before the rename
                if rest:
                    yield rest
                stream.close()
                stream = _open(path)
                continue
            if replaced == "truncated":
                stream.seek(0)
                continue
            time.sleep(interval_s)
    finally:
        if stream is not None:
            stream.close()


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

