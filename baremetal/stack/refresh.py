"""`up`'s step for the programs that read the stack file while they run (the gateway, the watchdog).

Their program files do not change when api_keys, a key file, the models or [watchdog] do, so applying
the render leaves them running as they were (a revoked key kept answering 200). After the render is
applied, `up` compares what each says it runs with (baremetal.stack.settings) with what the stack file
gives now, and brings it up to date: the gateway takes new keys, routes and limits on SIGHUP without
dropping a connection; the watchdog, which is not in the request path, is restarted. A changed
api.host or api.port is on the gateway's command line: applying the render restarts it for those.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from baremetal.config.api_keys import resolve_keys
from baremetal.config.model import Stack
from baremetal.errors import BaremetalError
from baremetal.plan.spec import ProgramSpec
from baremetal.stack.settings import Published, digest_of, gateway_settings, read_published, watchdog_settings
from baremetal.supervisord.client import SupervisorClient
from baremetal.supervisord.states import ProcessState

Say = Callable[[str], None]
RECORD_WAIT_S = 10.0      # a program that was just started publishes its record within about a second


@dataclass(frozen=True)
class Refreshed:
    """What `refresh` did."""

    reloaded: list[str] = field(default_factory=list)    # took new settings in place (SIGHUP)
    restarted: list[str] = field(default_factory=list)   # restarted to take them


def expected_digests(stack: Stack, specs: list[ProgramSpec], keys: list[str] | None) -> dict[str, str]:
    """Program -> the digest of the settings it should run with now (the api only when its keys are known
    here and it is baremetal's gateway). Pure."""
    names = {spec.name for spec in specs}
    expected = {}
    if "api" in names and stack.api.kind == "gateway" and keys is not None:
        expected["api"] = digest_of(gateway_settings(stack, keys))
    if "watchdog" in names:
        expected["watchdog"] = digest_of(watchdog_settings(stack, specs))
    return expected


def settings_state(expected: str, record: Published | None, pid: int | None) -> str:
    """"current", "older" (it runs with other settings), "unknown" (no record from this process: started
    by an older baremetal, or still starting) or "" (not running). Pure."""
    if not pid:
        return ""
    if record is None or record.pid != pid:
        return "unknown"
    return "current" if record.digest == expected else "older"


def keys_here(stack: Stack) -> list[str] | None:
    """The API keys as this process resolves them, or None when it cannot (an env: variable not set here)."""
    try:
        return resolve_keys(stack.api.key_specs)
    except BaremetalError:
        return None


def refresh(stack: Stack, client: SupervisorClient, specs: list[ProgramSpec], untouched: set[str],
            say: Say) -> Refreshed:
    """Bring the running programs in `untouched` (those the render did not just start or restart) to the
    stack file's settings. Raises BaremetalError when the gateway refuses the new settings."""
    keys = keys_here(stack)
    if keys is None and "api" in untouched and stack.api.kind == "gateway":
        say("note: api.api_keys cannot be resolved here (an env: variable not set in this shell?): the "
            "gateway's keys were not compared")
    infos = {info.name: info for info in client.processes()}
    done = Refreshed()
    for name, digest in expected_digests(stack, specs, keys).items():
        info = infos.get(name)
        if name not in untouched or info is None or info.state != ProcessState.RUNNING:
            continue
        record = _record_of(stack, name, info.pid, time.monotonic() + RECORD_WAIT_S)
        if record is not None and record.digest == digest:
            continue
        if name == "api" and record is not None:
            _reload_gateway(stack, client, record, digest)
            say("api: took the new settings (keys, models, limits) without a restart")
            done.reloaded.append(name)
        else:
            why = "its settings changed" if record is not None else "it does not say which settings it runs with"
            say(f"{name}: {why}: restarting it")
            client.stop(name)
            client.start(name, wait=False)
            done.restarted.append(name)
    return done


def _record_of(stack: Stack, program: str, pid: int, deadline_s: float) -> Published | None:
    """The record of the process `pid`, waiting for one that is starting; None if it never writes one."""
    while True:
        record = read_published(stack, program)
        if record is not None and record.pid == pid:
            return record
        if time.monotonic() >= deadline_s:
            return None
        time.sleep(0.1)


def _reload_gateway(stack: Stack, client: SupervisorClient, before: Published, digest: str) -> None:
    client.signal("api", "HUP")
    deadline = time.monotonic() + RECORD_WAIT_S
    record = before
    while record.loaded_s <= before.loaded_s:
        if time.monotonic() >= deadline:
            raise BaremetalError(f"api did not confirm a reload within {RECORD_WAIT_S:.0f}s of SIGHUP; "
                                 "`baremetal logs api --stderr` says why; `baremetal restart api` restarts it")
        time.sleep(0.05)
        record = read_published(stack, "api") or before
    if record.error:
        raise BaremetalError(f"api: {record.error}. Fix it and run `baremetal up` again")
    if record.digest != digest:
        raise BaremetalError("api reloaded, but resolves other API keys than this shell does: env:VAR keys are "
                             "read from supervisord's environment, fixed when the stack started. Export the new "
                             "value and run `baremetal down` and `baremetal up`, or use file:PATH keys")
