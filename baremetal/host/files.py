"""Files written whole: a reader sees the old content or the new, never half (rename over the old one)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, content: str | bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `path` with `content` in one step: a reader sees the old file or the new, never half.

    `durable=False` skips the fsync, for files rewritten every second (the watchdog's state) where
    losing the last version in a power cut does not matter but a disk stall on every write would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class CachedJson:
    """A JSON file that other processes replace atomically, read cheaply: stat-ed at most every
    `check_interval_s`, parsed again only when its mtime changes. `document()` is None while the file is
    missing, unreadable or not JSON (mid-replace: the next good write brings it back)."""

    def __init__(self, path: Path, check_interval_s: float = 0.25, clock=None):
        import time

        self.path = Path(path)
        self.check_interval_s = check_interval_s
        self.clock = clock or time.monotonic
        self.checked_s = float("-inf")       # when it was last stat-ed
        self.checks = 0                      # how many times: readers derive again after each
        self._identity: tuple[int, int] | None = None
        self._document: object = None

    def document(self) -> object:
        """The newest parsed content (any JSON value), or None."""
        now = self.clock()
        if now - self.checked_s >= self.check_interval_s:
            self.checked_s = now
            self.checks += 1
            self._refresh()
        return self._document

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.path)
        except OSError:
            self._identity, self._document = None, None
            return
        identity = (stat.st_ino, stat.st_mtime_ns)    # a replace is a new inode
        if identity == self._identity:
            return
        import json

        try:
            self._document = json.loads(self.path.read_bytes())
            self._identity = identity
        except (OSError, ValueError):
            self._document = None
