"""`baremetal init`: copy a commented starter stack file into place without losing an existing one."""

from __future__ import annotations

import shutil
from pathlib import Path

from baremetal.errors import UsageError
from baremetal.host.files import atomic_write

STARTERS_DIR = Path(__file__).resolve().parent / "starters"


def profiles_dir() -> Path:
    """Starter stack files for `baremetal init --profile`."""
    return STARTERS_DIR


def profile_text(profile: str) -> str:
    path = profiles_dir() / f"{profile}.toml"
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in profiles_dir().glob("*.toml")))
        raise UsageError(f"no profile {profile!r}; choose one of: {names}")
    return path.read_text(encoding="utf-8")


def write_profile(profile: str, target: Path, force: bool) -> Path | None:
    """Write the profile to `target`; returns the backup path when an existing file was replaced."""
    text = profile_text(profile)
    backup = None
    if target.exists():
        if not force:
            raise UsageError(f"{target} already exists; keep editing it, or pass --force to replace it "
                             "(the old file is kept as .bak)")
        backup = target.with_name(target.name + ".bak")
    try:
        if backup:
            shutil.copy2(target, backup)
        atomic_write(target, text)
    except OSError as error:
        raise UsageError(f"cannot write {target}: {error.strerror or error}; choose a folder you can write "
                         "to (PATH, or -c FILE)") from None
    return backup
