"""How `status` looks: the table for a person and the JSON for a program. Pure formatting."""

from __future__ import annotations

from typing import Any

from baremetal.cli.common import table
from baremetal.stack.status import ProgramStatus, StackStatus
from baremetal.supervisord.states import ProcessState


def duration_text(seconds: float | None) -> str:
    """"45s", "12m3s", "5h2m", "3d4h": two units at most, for a table cell."""
    if seconds is None:
        return "-"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _ready_cell(row: ProgramStatus) -> str:
    if row.ready is None:
        return "-"
    return "yes" if row.ready else "NO"


def _restarts_cell(row: ProgramStatus) -> str:
    text = "?" if row.restarts is None else str(row.restarts)
    if row.watchdog and row.watchdog.restarts:
        text += f" (watchdog {row.watchdog.restarts})"
    return text


def _gpus_cell(gpus: tuple[int, ...] | None) -> str:
    if gpus is None:
        return "-"
    return ",".join(map(str, gpus)) or "cpu"


def format_table(status: StackStatus) -> str:
    """The human view: a header line, one row per program, then why each bad program is bad."""
    ready = sum(1 for row in status.programs if row.good)
    head = (f"stack {status.stack!r}: supervisord pid {status.supervisord_pid}, "
            f"{ready}/{len(status.programs)} program(s) running and ready")
    if status.watchdog_age_s is not None:
        head += (f"; watchdog updated {duration_text(status.watchdog_age_s)} ago" if status.watchdog_fresh
                 else f"; watchdog report is stale ({duration_text(status.watchdog_age_s)} old): is it running?")
    headers = ["PROGRAM", "STATE", "PID", "UPTIME", "READY", "RESTARTS", "GPUS", "PORT"]
    with_phase = any(row.watchdog for row in status.programs)
    if with_phase:
        headers.append("WATCHDOG")
    rows = []
    for row in status.programs:
        cells = [row.name, row.state, str(row.pid or "-"), duration_text(row.uptime_s), _ready_cell(row),
                 _restarts_cell(row), _gpus_cell(row.gpus), str(row.port or "-")]
        if with_phase:
            cells.append(row.watchdog.phase if row.watchdog else "-")
        rows.append(cells)
    notes = [f"{row.name}: {_why(row)}" for row in status.programs if not row.good]
    if status.stack_changed:
        notes.insert(0, "the stack file changed since `baremetal up` last applied it: run `baremetal up` "
                        "(what runs is still the old file's)")
    gpus = [] if not status.gpus else ["", table([gpu_row(gpu, status.gpu_owners, status.cordoned)
                                                  for gpu in status.gpus], GPU_HEADERS)]
    cordons = cordon_lines(status.cordoned)
    return "\n".join([head, "", table(rows, headers)] + ([""] + notes if notes else []) + gpus
                     + ([""] + cordons if cordons else []))


def cordon_lines(cordoned: dict[int, dict]) -> list[str]:
    """One line per cordoned GPU: since when, why, and how to bring it back."""
    from datetime import datetime

    lines = []
    for gpu, entry in sorted(cordoned.items()):
        since = datetime.fromtimestamp(float(entry.get("since_s") or 0)).strftime("%Y-%m-%d %H:%M:%S")
        reset = f"; reset: {entry['reset']}" if entry.get("reset") else ""
        lines.append(f"GPU {gpu} CORDONED since {since} by {entry.get('by') or 'watchdog'}: {entry.get('reason')}"
                     f"{reset}; no program is started on it until `baremetal uncordon {gpu}`")
    return lines


GPU_HEADERS = ["GPU", "NAME", "TEMP", "MEMORY", "UTIL", "POWER", "ECC UNCORR", "THROTTLE", "PROCESSES"]


def gpu_row(gpu: dict, owners: dict[int, str | None], cordoned: dict[int, dict] | None = None) -> list[str]:
    """One GPU reading (GpuSample.to_json()) as table cells; '-' where the GPU does not report a value."""
    def value(number, unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
        return "-" if number is None else f"{number / scale:.{digits}f}{unit}"

    memory = f"{value(gpu.get('memory_used_bytes'), '', 2**30, 1)}/" \
             f"{value(gpu.get('memory_total_bytes'), ' GiB', 2**30, 1)}"
    power = f"{value(gpu.get('power_w'))}/{value(gpu.get('power_limit_w'), ' W')}"
    held = ", ".join(f"{p['pid']}{'(' + owners[p['pid']] + ')' if owners.get(p['pid']) else ''} "
                     f"{value(p.get('memory_used_bytes'), 'G', 2**30, 1)}" for p in gpu.get("processes") or ()) or "-"
    throttle = ",".join(r for r in gpu.get("throttle_reasons") or () if r != "gpu_idle") or "-"
    mark = " (cordoned)" if gpu["index"] in (cordoned or {}) else ""
    return [f"{gpu['index']}{mark}", gpu.get("name") or "-", value(gpu.get("temperature_c"), " C"), memory,
            value(gpu.get("utilization_gpu_percent"), "%"), power, value(gpu.get("ecc_uncorrected_volatile")),
            throttle, held]


def _why(row: ProgramStatus) -> str:
    if row.state == "NOT LOADED":
        return row.ready_detail
    parts = [f"not started: {row.blocked}"] if row.blocked else []
    if row.state == ProcessState.STOPPED.name and row.blocked:
        pass
    elif row.state == ProcessState.STOPPED.name:
        parts.append(f"stopped ({row.description}); `baremetal start {row.name}` or `baremetal up` starts it")
    elif row.state == ProcessState.STARTING.name:
        parts.append("starting")
    elif row.state != ProcessState.RUNNING.name:
        parts.append(f"{row.description or row.state}; `baremetal logs {row.name} --stderr` shows why")
    elif row.ready is False:
        parts.append(f"probe: {row.ready_detail}")
    if row.settings == "older":
        parts.append("runs with older settings than the stack file (keys, models, limits or [watchdog] changed "
                     "since it started): `baremetal up` applies them")
    elif row.settings == "unknown":
        parts.append("does not say which settings it runs with (started by an older baremetal?): "
                     "`baremetal up` restarts it")
    if row.watchdog and row.watchdog.reason:
        parts.append(f"watchdog: {row.watchdog.phase}: {row.watchdog.reason}")
    return "; ".join(parts)


def to_json(status: StackStatus) -> dict[str, Any]:
    """The machine view (for `status --json`)."""
    return {
        "stack": status.stack,
        "supervisord": {"running": True, "pid": status.supervisord_pid},
        "healthy": status.healthy, "stack_file_changed": status.stack_changed,
        "watchdog": {"age_s": status.watchdog_age_s, "fresh": status.watchdog_fresh},
        "programs": [{
            "name": row.name, "state": row.state, "pid": row.pid, "uptime_s": row.uptime_s,
            "ready": row.ready, "ready_detail": row.ready_detail, "restarts": row.restarts,
            "gpus": list(row.gpus) if row.gpus is not None else None, "port": row.port,
            "description": row.description, "settings": row.settings or None,
            "watchdog": None if row.watchdog is None else {
                "phase": row.watchdog.phase, "healthy": row.watchdog.healthy, "reason": row.watchdog.reason,
                "restarts": row.watchdog.restarts, "last_restart_s": row.watchdog.last_restart_s,
                "hang_kind": row.watchdog.hang_kind, "evidence": row.watchdog.evidence},
            "blocked": row.blocked,
        } for row in status.programs],
        "cordoned": {str(gpu): entry for gpu, entry in status.cordoned.items()},
        "gpus": status.gpus, "gpus_from": status.gpus_from,
        "gpu_owners": {str(pid): name for pid, name in status.gpu_owners.items()},
    }
