"""Settings that programs read from the stack file while they run, and the record of what each runs with.

The gateway and the watchdog read the stack file themselves (keys, routes, the programs to watch), so
their program files do not change when those do. Each describes what it read as plain data (secrets
only as digests), hashes it, and publishes the digest in <root>/run/<program>.settings.json (mode 0600):

    {"pid": 1234, "digest": "9f2c...", "loaded_s": 1764583200.1, "error": null}

`up` compares that digest with the one the stack file gives now and reloads (the gateway, SIGHUP) or
restarts (the watchdog) a program that differs; `status` shows one that runs with older settings.
`error` is set when a reload failed (the program keeps its previous settings).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from baremetal.config.model import Stack
from baremetal.host.files import atomic_write
from baremetal.plan.spec import ProgramSpec

RUNTIME_READERS = ("api", "watchdog")     # programs that read the stack file at run time


def plain(value: Any) -> Any:
    """`value` as JSON data: dataclasses and mappings as objects, tuples and sets as arrays, paths as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(plain(item) for item in value)
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def digest_of(settings: Any) -> str:
    """A stable hash of a settings description."""
    text = json.dumps(plain(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def key_digests(keys: Iterable[str]) -> list[str]:
    """What of the API keys goes into a settings description: their hashes, never the keys."""
    return sorted(hashlib.sha256(key.encode()).hexdigest() for key in keys)


def gateway_settings(stack: Stack, keys: Iterable[str]) -> dict[str, Any]:
    """Everything the gateway takes from the stack file and can take again on SIGHUP: its keys (every
    key of api_keys and of the [[api.key]] tables, resolved), the models and [[program]] backends it
    routes to, the controller, its time limits, the key names, models and limits, where the watchdog's
    report is. Its listen address is not here: that is on its command line, and a change restarts it."""
    return gateway_settings_hashed(stack, key_digests(keys))


def gateway_settings_hashed(stack: Stack, key_hashes: Iterable[str]) -> dict[str, Any]:
    """gateway_settings with the keys given as their sorted SHA-256 hex digests (what the gateway keeps)."""
    api = {name: value for name, value in plain(stack.api).items()
           if name not in ("host", "port", "api_keys", "workers")}
    api["named_keys"] = [{name: value for name, value in entry.items() if name != "key"}
                         for entry in api.get("named_keys", [])]
    return {"api": api, "keys": sorted(key_hashes), "models": plain(stack.models),
            "programs": plain([program for program in stack.programs if program.serves]),
            "controller": plain(stack.controller), "watchdog_interval_s": stack.watchdog.interval_s,
            "root": str(stack.root), "cluster": plain(stack.cluster)}


def watchdog_settings(stack: Stack, specs: Iterable[ProgramSpec]) -> dict[str, Any]:
    """Everything the watchdog takes from the stack file at start: [watchdog], and what it watches."""
    watched = [{"name": spec.name, "role": spec.role, "gpus": plain(spec.gpus), "host": spec.host,
                "port": spec.port, "probe": plain(spec.probe), "model": spec.model, "engine": spec.engine}
               for spec in specs if spec.role != "watchdog"]
    return {"watchdog": plain(stack.watchdog), "programs": watched, "root": str(stack.root),
            "cluster": plain(stack.cluster)}


@dataclass(frozen=True)
class Published:
    """What a program says it runs with."""

    pid: int
    digest: str
    loaded_s: float
    error: str | None = None


def settings_path(stack: Stack, program: str) -> Path:
    return stack.run_dir / f"{program}.settings.json"


def publish(stack: Stack, program: str, digest: str, error: str | None = None, pid: int | None = None) -> None:
    """Write this process's record (mode 0600: it is nobody else's business what it runs with); `pid`: the
    process supervisord knows, when that is not this one (a gateway worker speaks for its parent)."""
    record = {"pid": pid or os.getpid(), "digest": digest, "loaded_s": round(time.time(), 3), "error": error}
    atomic_write(settings_path(stack, program), json.dumps(record), mode=0o600, durable=False)


def read_published(stack: Stack, program: str) -> Published | None:
    """The record of `program`, or None when there is none or it cannot be read."""
    try:
        record = json.loads(settings_path(stack, program).read_text(encoding="utf-8"))
        return Published(int(record["pid"]), str(record["digest"]), float(record["loaded_s"]),
                         record.get("error") or None)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def supervised_as(program: str) -> bool:
    """True when this process is supervisord's program `program` (not a copy run by hand to try a stack)."""
    return os.environ.get("SUPERVISOR_PROCESS_NAME") == program


def stack_digest(stack: Stack) -> str:
    """What the stack file says, as a digest (its layout and comments do not count)."""
    return digest_of({name: value for name, value in plain(stack).items() if name != "warnings"})


def record_applied(stack: Stack) -> None:
    """`up` applied the stack file as it is now: <root>/run/applied.json."""
    atomic_write(stack.run_dir / "applied.json", json.dumps({"digest": stack_digest(stack),
                                                             "applied_s": round(time.time(), 3)}),
                 mode=0o600, durable=False)


def changed_since_applied(stack: Stack) -> bool:
    """True when the stack file says something else than when `up` last applied it (False without a record)."""
    try:
        recorded = json.loads((stack.run_dir / "applied.json").read_text(encoding="utf-8"))["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return recorded != stack_digest(stack)
