"""API keys from their specs (literal, env:VAR, file:PATH). Keys are secrets: never log or print them."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from baremetal.errors import BaremetalError


def resolve_key_spec(spec: str, field: str = "api.api_keys") -> list[str]:
    """The keys one spec stands for; a file holds one key per line (blank lines and # comments skipped).
    `field` names the spec's place in the stack file in error messages."""
    if spec.startswith("env:"):
        name = spec[4:]
        value = os.environ.get(name, "")
        if not value:
            raise BaremetalError(f"{field}: environment variable {name} is unset or empty; export it "
                                 "(for supervisord-managed programs, before supervisord starts)")
        return [value]
    if spec.startswith("file:"):
        path = Path(spec[5:]).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise BaremetalError(f"{field}: cannot read {path}: {error.strerror}") from None
        keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise BaremetalError(f"{field}: {path} holds no key")
        return keys
    return [spec]


def resolve_keys(specs: tuple[str, ...] | list[str]) -> list[str]:
    """Every key of every spec, in order."""
    return [key for spec in specs for key in resolve_key_spec(spec)]


def key_file_paths(specs: tuple[str, ...] | list[str]) -> list[Path]:
    """The files that `file:PATH` specs name (what the gateway must be able to read)."""
    return [Path(spec[5:]).expanduser() for spec in specs if spec.startswith("file:")]


def key_digest(key: str) -> bytes:
    """SHA-256 of a key: keys are compared as digests, which all have one length (a raw compare leaks it)."""
    return hashlib.sha256(key.encode("utf-8", errors="surrogateescape")).digest()


def key_matches(offered: str, keys: list[str]) -> bool:
    """Constant-time comparison of digests against every key (no early exit that would leak which one is close)."""
    digest = key_digest(offered)
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(digest, key_digest(key))
    return matched


def probe_key(api) -> str | None:
    """A key for baremetal's own probes of the API server (`up`, `status`) when the stack sets keys."""
    if api.kind == "none" or not api.key_specs:
        return None
    keys = resolve_keys(api.key_specs)
    return keys[0] if keys else None
