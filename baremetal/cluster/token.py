"""Ray's authentication token: one random secret in a file (mode 0600) that every node of the cluster
reads through RAY_AUTH_TOKEN_PATH. It never goes into a program file, an argv or a log."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from baremetal.host.files import atomic_write

TOKEN_BYTES = 32            # 256 bits, as `ray get-auth-token --generate` makes


def write_token(path: Path, force: bool = False) -> bool:
    """Write a new token to `path` unless one is there (or `force`); True when written."""
    if path.exists() and not force:
        return False
    atomic_write(path, secrets.token_hex(TOKEN_BYTES), mode=0o600)
    return True


def token_problem(path: Path) -> str | None:
    """What keeps `path` from serving as the cluster's token, or None."""
    try:
        info = os.stat(path)
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return f"{path} does not exist: run `baremetal cluster token` on one node and copy the file to every node"
    except OSError as error:
        return f"cannot read {path}: {error.strerror}"
    if not text:
        return f"{path} is empty: run `baremetal cluster token --force` and copy it to every node"
    if stat.S_IMODE(info.st_mode) & 0o077:
        return (f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}): anyone who reads it can run "
                f"code on every node; chmod 600 {path}")
    return None
