"""Writes rendered files: atomically, only when changed, pruning program files it wrote before and no
longer generates, and never touching a file it did not write."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from baremetal.errors import UsageError
from baremetal.host.files import atomic_write
from baremetal.plan.render import MARKER, RenderedFile


@dataclass
class Changes:
    """What a write did, by path relative to the target folder."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


def is_ours(path: Path) -> bool:
    """True when `path` starts with baremetal's marker line."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as stream:
            return stream.readline().startswith(MARKER)
    except OSError:
        return False


def write_rendered(files: list[RenderedFile], target: Path) -> Changes:
    """Write `files` under `target` (holding supervisord.conf and conf.d/)."""
    changes = Changes()
    for rendered in files:
        path = target / rendered.path
        if path.exists() and not is_ours(path):
            raise UsageError(f"{path} exists and was not written by baremetal; move it away (or rename the "
                             "program) so that baremetal does not overwrite your file")
    wanted = {rendered.path for rendered in files}
    for rendered in files:
        path = target / rendered.path
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old == rendered.content:
            changes.unchanged.append(rendered.path)
            continue
        atomic_write(path, rendered.content, mode=0o640)     # what a stack runs is not every local user's business
        (changes.created if old is None else changes.updated).append(rendered.path)
    confd = target / "conf.d"
    for stale in sorted(confd.glob("*.conf")) if confd.is_dir() else []:
        relative = f"conf.d/{stale.name}"
        if relative not in wanted and is_ours(stale):
            stale.unlink()
            changes.removed.append(relative)
    return changes


def prepare_root(root: Path) -> None:
    """Create the stack's state folders; run/ (the supervisord socket) is private to its owner."""
    for name in ("supervisor/conf.d", "logs", "tmp", "cache"):
        (root / name).mkdir(parents=True, exist_ok=True)
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    os.chmod(run, 0o700)
