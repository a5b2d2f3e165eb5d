"""`baremetal status`: one row per program from supervisord, a quick probe of each, restarts counted from
supervisord's log, and the watchdog's view when it is fresh. Fast: one XML-RPC call, probes in threads
with a short timeout, the log read backwards only as far as the last supervisord start.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from baremetal.config.model import Stack
from baremetal.host import processes
from baremetal.plan.spec import ProgramSpec
from baremetal.stack.probes import ProbeResult, probe
from baremetal.supervisord.client import ProcessInfo, SupervisorClient
from baremetal.supervisord.logtail import reverse_lines
from baremetal.supervisord.states import ProcessState

SPAWNED = re.compile(rb"spawned: '([^']+)' with pid (\d+)")
STARTED = re.compile(rb"supervisord started with pid (\d+)")
LOG_BACKUPS = 5                      # supervisord.conf keeps logfile_backups=5
LOG_SCAN_BYTES = 16 * 1024 * 1024    # past this, restarts are reported unknown rather than read slowly
WATCHDOG_MIN_AGE_S = 10.0
SETTINGS_GRACE_S = 30.0
NOT_SERVING_PHASES = ("loading", "stuck", "restarting", "failed", "given_up", "hardware_fault")


@dataclass(frozen=True)
class WatchdogEntry:
    """One program as the watchdog last saw it (from <root>/run/watchdog.json)."""

    phase: str
    healthy: bool | None
    reason: str
    restarts: int | None
    last_restart_s: float | None
    hang_kind: str | None = None      # the watchdog's classification of the last stall (hang_kind.py)
    evidence: str | None = None       # its newest evidence folder


@dataclass(frozen=True)
class ProgramStatus:
    name: str
    state: str                        # a ProcessState name, or "NOT LOADED" (in the stack, not in supervisord)
    pid: int | None
    uptime_s: float | None
    ready: bool | None                # None: not probed (not running)
    ready_detail: str
    restarts: int | None              # spawns since supervisord started, minus the first; None: unknown
    gpus: tuple[int, ...] | None
    port: int | None
    description: str = ""
    watchdog: WatchdogEntry | None = None
    blocked: str | None = None        # not started: its GPUs are cordoned and no spare is free
    settings: str = ""                # programs that read the stack file: current | older | unknown (refresh.py)

    @property
    def good(self) -> bool:
        """Running and ready (or running with nothing to probe), with the stack file's settings."""
        return (self.state == ProcessState.RUNNING.name and self.ready is not False
                and self.settings not in ("older", "unknown"))


@dataclass(frozen=True)
class StackStatus:
    stack: str
    supervisord_pid: int | None
    programs: list[ProgramStatus] = field(default_factory=list)
    watchdog_age_s: float | None = None   # None: no watchdog.json; see watchdog_fresh
    watchdog_fresh: bool = False
    gpus: list[dict] = field(default_factory=list)      # GpuSample.to_json() readings, [] without NVML
    gpus_from: str | None = None                        # "watchdog" (its last tick) or "nvml" (read now)
    gpu_owners: dict[int, str] = field(default_factory=dict)   # pid on a GPU -> the program it belongs to
    cordoned: dict[int, dict] = field(default_factory=dict)    # cordoned GPU -> its cordon.json entry
    stack_changed: bool = False       # the stack file says something else than when `up` last applied it

    @property
    def healthy(self) -> bool:
        """Every program running and ready, as the stack file says."""
        return all(program.good for program in self.programs) and not self.stack_changed


def count_spawns(log: Path, supervisord_pid: int | None) -> dict[str, int] | None:
    """Spawns per program since the supervisord with `supervisord_pid` started (any, when None), read
    from its log and rotated backups; None when the start is not found within LOG_SCAN_BYTES."""
    counts: dict[str, int] = {}
    budget = LOG_SCAN_BYTES
    for index in range(LOG_BACKUPS + 1):
        path = log if index == 0 else log.with_name(f"{log.name}.{index}")
        if not path.exists():
            return None
        size = path.stat().st_size
        for line in reverse_lines(path, max_bytes=budget):
            spawned = SPAWNED.search(line)
            if spawned:
                name = spawned.group(1).decode(errors="replace")
                counts[name] = counts.get(name, 0) + 1
                continue
            started = STARTED.search(line)
            if started and (supervisord_pid is None or int(started.group(1)) == supervisord_pid):
                return counts
        budget -= size
        if budget <= 0:
            return None
    return None


def read_watchdog(path: Path, now_s: float, max_age_s: float) -> tuple[dict[str, WatchdogEntry], float | None, bool]:
    """(views by program, age in seconds, fresh?) from the watchdog's file; ({}, None, False) without one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        age_s = now_s - float(data["updated_s"])
        programs = data.get("programs") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}, None, False
    views = {}
    for name, entry in programs.items():
        if isinstance(entry, dict):
            views[name] = WatchdogEntry(phase=str(entry.get("phase", "")), healthy=entry.get("healthy"),
                                       reason=str(entry.get("reason", "") or ""), restarts=entry.get("restarts"),
                                       last_restart_s=entry.get("last_restart_s"), hang_kind=entry.get("hang_kind"),
                                       evidence=entry.get("evidence"))
    fresh = age_s <= max_age_s
    return (views if fresh else {}), age_s, fresh


def watchdog_gpus(path: Path, now_s: float, max_age_s: float) -> list[dict] | None:
    """The GPU readings of a fresh watchdog report; None without one (or when its NVML was not working)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fresh = now_s - float(data["updated_s"]) <= max_age_s
    except (OSError, ValueError, KeyError, TypeError):
        return None
    gpus = data.get("gpus")
    if not fresh or data.get("nvml") or not isinstance(gpus, list):
        return None
    return [gpu for gpu in gpus if isinstance(gpu, dict)]


def collect(stack: Stack, specs: list[ProgramSpec], client: SupervisorClient, http: Any, now_s: float,
            probe_timeout_s: float = 0.5, api_key: str | None = None,
            sample_gpus: Callable[[], list[dict]] | None = None) -> StackStatus:
    """Everything `status` shows. Raises NotRunningError when supervisord does not answer. GPU readings
    come from the watchdog's last tick, else from `sample_gpus` (NVML now) when a program is pinned to GPUs."""
    infos = client.processes()
    supervisord_pid = client.pid()
    by_spec = {spec.name: spec for spec in specs}
    to_probe = [info for info in infos if info.state == ProcessState.RUNNING
                and by_spec.get(info.name) and by_spec[info.name].probe]
    results: dict[str, ProbeResult] = {}
    if to_probe:
        def run(info: ProcessInfo) -> ProbeResult:
            spec_probe = by_spec[info.name].probe
            key = api_key if spec_probe.kind == "openai" else None
            return probe(spec_probe, http, timeout_s=probe_timeout_s, deep=False, api_key=key)

        with ThreadPoolExecutor(max_workers=min(16, len(to_probe))) as pool:
            results = dict(zip((info.name for info in to_probe), pool.map(run, to_probe), strict=True))
    spawns = count_spawns(stack.logs_dir / "supervisord.log", supervisord_pid)
    max_age_s = max(WATCHDOG_MIN_AGE_S, 5 * stack.watchdog.interval_s)
    views, age_s, fresh = read_watchdog(stack.watchdog_state_path, now_s, max_age_s)
    rows = [_row(info, by_spec.get(info.name), results.get(info.name), spawns, views.get(info.name))
            for info in infos]
    rows = with_settings(stack, specs, rows)
    loaded = {info.name for info in infos}
    rows += [ProgramStatus(spec.name, "NOT LOADED", None, None, None, "not in supervisord: run `baremetal up`",
                           None, spec.gpus, spec.port) for spec in specs if spec.name not in loaded]
    order = {spec.name: index for index, spec in enumerate(specs)}
    rows.sort(key=lambda row: (order.get(row.name, len(order)), row.name))
    gpus, gpus_from = watchdog_gpus(stack.watchdog_state_path, now_s, max_age_s), "watchdog"
    if gpus is None:
        gpus, gpus_from = [], None
        if sample_gpus is not None and any(spec.gpus for spec in specs):
            gpus = sample_gpus()
            gpus_from = "nvml" if gpus else None
    from baremetal.host.cordon import cordon_path, read_cordons
    from baremetal.stack.settings import changed_since_applied

    cordoned = {gpu: entry.to_json() for gpu, entry in read_cordons(cordon_path(stack.run_dir)).items()}
    return StackStatus(stack.stack.name, supervisord_pid, rows, age_s, fresh, gpus, gpus_from if gpus else None,
                       gpu_owners(gpus, rows), cordoned, changed_since_applied(stack))


def gpu_owners(gpus: list[dict], rows: list[ProgramStatus]) -> dict[int, str]:
    """pid -> program for the processes on the GPUs: members of a program's process tree (vLLM's engine
    cores and ranks are children of the server supervisord knows), else by their environment."""
    on_gpu = {p.get("pid") for gpu in gpus for p in gpu.get("processes") or () if isinstance(p, dict)}
    on_gpu.discard(None)
    if not on_gpu:
        return {}
    owners = {}
    for row in rows:
        if row.pid:
            owners |= {member.pid: row.name for member in processes.tree(row.pid) if member.pid in on_gpu}
    for pid in on_gpu - owners.keys():
        name = processes.program_of(pid)
        if name:
            owners[pid] = name
    return owners


def with_settings(stack: Stack, specs: list[ProgramSpec], rows: list[ProgramStatus]) -> list[ProgramStatus]:
    """Rows of the programs that read the stack file at run time, marked when they run with other settings
    than it gives now (a key rotated, a model added, [watchdog] edited, and `up` not run since)."""
    from baremetal.stack.refresh import expected_digests, keys_here, settings_state
    from baremetal.stack.settings import read_published

    expected = expected_digests(stack, specs, keys_here(stack))
    marked = []
    for row in rows:
        if row.name in expected:
            state = settings_state(expected[row.name], read_published(stack, row.name), row.pid)
            if state == "unknown" and (row.uptime_s or 0) < SETTINGS_GRACE_S:
                state = ""            # just started: it publishes its settings within a few seconds
            row = replace(row, settings=state)
        marked.append(row)
    return marked


def agreed_readiness(ready: bool | None, detail: str, view: WatchdogEntry | None) -> tuple[bool | None, str]:
    """READY as status shows it: its own probe, unless a fresh watchdog report does not call the program
    ready (loading, stuck, ...): the gateway sends such a program no requests, so it is not ready. Pure."""
    if ready and view is not None and view.phase in NOT_SERVING_PHASES:
        return False, f"{detail}, but the watchdog says {view.phase}"
    return ready, detail


def _row(info: ProcessInfo, spec: ProgramSpec | None, result: ProbeResult | None, spawns: dict[str, int] | None,
         view: WatchdogEntry | None) -> ProgramStatus:
    running = info.state == ProcessState.RUNNING
    if result is not None:
        ready, detail = result.ok, result.detail
    elif running:
        ready, detail = True, "no probe"
    else:
        ready, detail = None, ""
    ready, detail = agreed_readiness(ready, detail, view)
    restarts = None if spawns is None else max(0, spawns.get(info.name, 0) - 1)
    return ProgramStatus(name=info.name, state=info.state.name, pid=info.pid or None, uptime_s=info.uptime_s,
                         ready=ready, ready_detail=detail, restarts=restarts,
                         gpus=spec.gpus if spec else None, port=spec.port if spec else None,
                         description=info.description, watchdog=view, blocked=spec.blocked if spec else None)

