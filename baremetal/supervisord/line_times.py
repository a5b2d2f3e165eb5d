"""When a log line was written, read from the timestamp it carries, for `logs --since`.

supervisord stores what a program prints as it is, without a time of its own, so the only dates are the
ones the programs write: Python's logging and supervisord (`2026-12-01 10:42:34,872`), ISO 8601
(`2026-12-01T10:42:34.872+00:00`), FastChat (`2026-12-01 10:42:34 | INFO | ...`) and vLLM (`INFO 12-01
10:42:34 [...]`, no year, also after a `(APIServer pid=N)` prefix). A line without one (a traceback, an
access-log line) belongs to the dated line before it. Times without a zone are the programs' local time:
the stack's `timezone` when it sets one, else this host's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Iterator

from baremetal.supervisord.logtail import reverse_lines

SEARCH_BYTES = 96        # a timestamp counts only near the start of a line (after a level or a prefix)
UNDATED_AFTER_LINES = 10_000   # a log whose newest lines carry no timestamp this far back has none
ISO = re.compile(rb"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
                 rb"(Z|[+-]\d{2}:?\d{2})?")
VLLM = re.compile(rb"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})")
ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def line_time_s(line: bytes, zone: tzinfo | None, now_s: float) -> float | None:
    """Epoch seconds of the timestamp near the start of `line`; None when it has none. A year-less vLLM
    date is in the year that puts it at or before `now_s`."""
    head = ANSI.sub(b"", line[:SEARCH_BYTES + 32])[:SEARCH_BYTES]
    found = ISO.search(head)
    if found:
        year, month, day, hour, minute, second = (int(part) for part in found.groups()[:6])
        fraction = float(b"0." + found.group(7)) if found.group(7) else 0.0
        offset = found.group(8)
        try:
            if offset:
                text = "+00:00" if offset == b"Z" else offset.decode()
                stamp = datetime.fromisoformat(f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:"
                                               f"{second:02d}{text if ':' in text else text[:3] + ':' + text[3:]}")
            else:
                stamp = datetime(year, month, day, hour, minute, second, tzinfo=zone)
        except ValueError:
            return None
        return stamp.timestamp() + fraction
    found = VLLM.search(head)
    if not found:
        return None
    month, day, hour, minute, second = (int(part) for part in found.groups())
    year = datetime.fromtimestamp(now_s, zone).year
    try:
        stamp = datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp()
        if stamp > now_s + 86400:          # December's lines read in January
            stamp = datetime(year - 1, month, day, hour, minute, second, tzinfo=zone).timestamp()
    except ValueError:
        return None
    return stamp


@dataclass(frozen=True)
class DatedLine:
    """A line of a log and the time it was written (its own timestamp, or its dated predecessor's)."""

    time_s: float
    text: bytes


def rotated_files(path: Path, backups: int = 10) -> list[Path]:
    """`path` and its rotated copies (`path.1`, `path.2`, ... as supervisord names them), newest first."""
    files = [path]
    for number in range(1, backups + 1):
        older = path.with_name(f"{path.name}.{number}")
        if not older.exists():
            break
        files.append(older)
    return files


def lines_since(path: Path, since_s: float, zone: tzinfo | None, now_s: float,
                undated_count: int) -> tuple[list[DatedLine], bool]:
    """(the lines of `path` and its rotated copies written at or after `since_s`, oldest first; whether any
    line had a timestamp). A log with no timestamp at all gives its last `undated_count` lines, dated by
    the file's modification time, if it was written to since then."""
    found: list[DatedLine] = []
    dated = False
    for file in rotated_files(path):
        try:
            modified_s = file.stat().st_mtime
        except OSError:
            break
        if modified_s < since_s:
            break
        done, file_dated = _scan_back(file, modified_s, since_s, zone, now_s, found)
        dated = dated or file_dated
        if done:
            break
    if not dated:
        try:
            modified_s = path.stat().st_mtime
        except OSError:
            return [], False
        return [DatedLine(modified_s, line.text) for line in reversed(found[:undated_count])], False
    found.reverse()
    return found, True


def _scan_back(file: Path, modified_s: float, since_s: float, zone: tzinfo | None, now_s: float,
               found: list[DatedLine]) -> tuple[bool, bool]:
    """Append the file's lines newest first to `found` until a dated line older than `since_s`; (stop
    there, saw a dated line). Undated lines wait for the dated line they follow."""
    pending: list[bytes] = []
    dated = stop = False
    for index, line in enumerate(reverse_lines(file)):
        if index == 0 and line == b"":
            continue                         # the file ends with a newline
        time_s = line_time_s(line, zone, now_s)
        if time_s is None:
            pending.append(line)
            if not dated and not found and len(pending) >= UNDATED_AFTER_LINES:
                stop = True
                break
            continue
        dated = True
        if time_s < since_s:
            return True, True
        found.extend(DatedLine(time_s, text) for text in pending)
        found.append(DatedLine(time_s, line))
        pending = []
    oldest_s = found[-1].time_s if found else modified_s
    found.extend(DatedLine(oldest_s, text) for text in pending)
    return stop, dated


def tail_dated(path: Path, count: int, zone: tzinfo | None, now_s: float) -> list[DatedLine]:
    """The last `count` lines of `path`, oldest first, each dated as `lines_since` dates them (a log
    without timestamps: by the file's modification time)."""
    try:
        modified_s = path.stat().st_mtime
    except OSError:
        return []
    newest_first: list[tuple[float | None, bytes]] = []
    anchor_s = None                          # the dated line just before the window
    for index, line in enumerate(reverse_lines(path)):
        if index == 0 and line == b"":
            continue
        time_s = line_time_s(line, zone, now_s)
        if len(newest_first) < count:
            newest_first.append((time_s, line))
        elif time_s is not None or index > count + 1000:
            anchor_s = time_s
            break
    if count <= 0 or not newest_first:
        return []
    dated = [time_s for time_s, _line in reversed(newest_first) if time_s is not None]
    current_s = anchor_s if anchor_s is not None else (dated[0] if dated else modified_s)
    lines = []
    for time_s, line in reversed(newest_first):
        current_s = time_s if time_s is not None else current_s
        lines.append(DatedLine(current_s, line))
    return lines


def merged(*logs: list[DatedLine]) -> Iterator[tuple[int, DatedLine]]:
    """(which log, line) over several logs, oldest first; lines of one time keep their logs' order."""
    entries = [(line.time_s, index, position, line) for index, lines in enumerate(logs)
               for position, line in enumerate(lines)]
    entries.sort(key=lambda entry: entry[:3])
    for _time_s, index, _position, line in entries:
        yield index, line
