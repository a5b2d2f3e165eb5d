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
