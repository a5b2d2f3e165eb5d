"""The API key specs of a FastChat API server (api.kind "fastchat" / "fastchat-tools"), handed to its
launcher in <root>/run/api-keys.json (mode 0600, in the 0700 run/ folder) instead of on its command line,
where a literal key would be in conf.d/api.conf (0644) and in `ps` for every local user.

The program file carries only the path and a version: a salted digest of the specs, so that changed keys
change the file (and `up` restarts the server) while the file reveals nothing about them.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from pathlib import Path

from baremetal.config.model import Stack
from baremetal.host.files import atomic_write

FILE_NAME = "api-keys.json"


def keys_file(stack: Stack) -> Path:
    """Where the launcher reads the specs from."""
    return stack.run_dir / FILE_NAME


def uses_keys_file(stack: Stack) -> bool:
    """True when the stack's API server is FastChat's and has keys."""
    return stack.api.kind in ("fastchat", "fastchat-tools") and bool(stack.api.api_keys)


def _read(path: Path) -> dict | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and isinstance(document.get("salt"), str) else None


def version(salt: str, specs: list[str]) -> str:
    """A digest of the specs that is no help in guessing a key without the (private) salt."""
    return hashlib.sha256(bytes.fromhex(salt) + json.dumps(specs).encode()).hexdigest()[:16]


def planned(stack: Stack) -> tuple[dict | None, str | None]:
    """(the document to write, its version) for the stack's keys, keeping the salt of the last write;
    (None, None) without keys. Reads, writes nothing."""
    if not uses_keys_file(stack):
        return None, None
    specs = list(stack.api.api_keys)
    old = _read(keys_file(stack))
    salt = old["salt"] if old and re.fullmatch(r"[0-9a-f]{32}", old["salt"]) else secrets.token_hex(16)
    return {"salt": salt, "specs": specs}, version(salt, specs)


def write_keys_file(stack: Stack, document: dict | None) -> None:
    """Write `document` (from `planned`) when it differs from the file, mode 0600."""
    if document is None or _read(keys_file(stack)) == document:
        return
    stack.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(keys_file(stack), json.dumps(document) + "\n", mode=0o600)
