"""Where `top` reads from, once a refresh, as cheaply as it can: never a request to an engine.

- supervisord: one getAllProcessInfo call;
- <root>/run/watchdog.json, gateway.json, drain.json, cordon.json: read again only when their stat changes;
- the gateway's /metrics page (the gateway, not an engine): one GET;
- NVML: one reading of every GPU (kept open between refreshes), else the watchdog's last tick;
- the newest events and the selected program's log tail: read again only when their file changes;
- supervisord's log (restarts) and the process trees (who holds GPU memory): only when they change.

No source raises into the view: a failure is a reason in the Reading.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from baremetal.cli.top.builder import watchdog_max_age_s
from baremetal.cli.top.frame import LogTail, Reading
from baremetal.config.model import Stack, connect_host
from baremetal.errors import BaremetalError
from baremetal.host import processes
from baremetal.host.nvml import GpuMonitor
from baremetal.stack.http_client import LiteClient
from baremetal.stack.status import count_spawns
from baremetal.supervisord.client import ProcessInfo, SupervisorClient
from baremetal.supervisord.logtail import last_lines, reverse_lines
from baremetal.watchdog.events import events_path

METRICS_TIMEOUT_S = 0.5
SUPERVISORD_TIMEOUT_S = 2.0
EVENTS_KEPT = 50
LOG_LINES = 200


def _stat_key(path: Path) -> tuple | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


class ChangedFile:
    """A file read again only when its stat changes; `parse` turns its path into a value."""

    def __init__(self, path: Path, parse: Callable[[Path], Any], missing: Any = None):
        self.path = Path(path)
        self._parse = parse
        self._missing = missing
        self._key: tuple | None = None
        self._value = missing

    def read(self) -> Any:
        """The value of the file as it is now (`missing` when it does not exist or cannot be read)."""
        key = _stat_key(self.path)
        if key is None:
            self._key, self._value = None, self._missing
        elif key != self._key:
            try:
                self._value = self._parse(self.path)
            except (OSError, ValueError):
                self._value = self._missing
            self._key = key
        return self._value


def _json(path: Path) -> dict | None:
    document = json.loads(path.read_text(encoding="utf-8"))
    return document if isinstance(document, dict) else None


def newest_events(path: Path, count: int = EVENTS_KEPT) -> tuple[dict, ...]:
    """The last `count` events of the watchdog's log (and its newest rotated file), oldest first."""
    found: list[dict] = []
    for file in (path, path.with_name(path.name + ".1")):
        try:
            for line in reverse_lines(file):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    found.append(event)
                    if len(found) >= count:
                        return tuple(reversed(found))
        except OSError:
            continue
    return tuple(reversed(found))


class GpuSource:
    """NVML when this process can use it, else the GPU readings of a fresh watchdog report."""

    def __init__(self, nvml: Any = None):
        self.monitor = GpuMonitor(nvml=nvml)
        self.monitor.start(xid_events=False)

    def read(self, watchdog: dict | None, watchdog_fresh: bool) -> tuple[tuple[dict, ...], str | None, str | None]:
        """(readings, "nvml" | "watchdog" | None, why there are none)."""
        if self.monitor.available:
            return tuple(sample.to_json() for sample in self.monitor.sample()), "nvml", None
        if watchdog_fresh and watchdog and not watchdog.get("nvml") and isinstance(watchdog.get("gpus"), list):
            gpus = tuple(gpu for gpu in watchdog["gpus"] if isinstance(gpu, dict))
            if gpus:
                return gpus, "watchdog", None
        return (), None, self.monitor.reason or "NVML not available"

    def close(self) -> None:
        """Release NVML."""
        self.monitor.close()


class GpuOwners:
    """pid on a GPU -> its program, found in the programs' process trees (vLLM's engine cores and ranks
    are children of the server supervisord knows), else by environment; worked out again only when the
    pids on the GPUs or the programs' pids change."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._owners: dict[int, str] = {}

    def owners(self, gpus: tuple[dict, ...], infos: tuple[ProcessInfo, ...]) -> dict[int, str]:
        """pid -> program for every process on the GPUs that belongs to a program."""
        on_gpu = frozenset(p.get("pid") for gpu in gpus for p in gpu.get("processes") or ()
                           if isinstance(p, dict) and p.get("pid"))
        programs = tuple(sorted((info.name, info.pid) for info in infos if info.pid))
        if not on_gpu:
            return {}
        if (on_gpu, programs) != self._key:
            owners: dict[int, str] = {}
            for name, pid in programs:
                owners |= {member.pid: name for member in processes.tree(pid) if member.pid in on_gpu}
            for pid in on_gpu - owners.keys():
                name = processes.program_of(pid)
                if name:
                    owners[pid] = name
            self._key, self._owners = (on_gpu, programs), owners
        return self._owners


class NodeReader:
    """Every source of one stack. `selected` names the program (and stream) whose log tail is read."""

    def __init__(self, stack: Stack, nvml: Any = None, clock: Callable[[], float] = time.time):
        self.stack = stack
        self.clock = clock
        self.http = LiteClient()
        self.client = SupervisorClient(stack.socket_path, timeout_s=SUPERVISORD_TIMEOUT_S)
        run = stack.run_dir
        self.files = {name: ChangedFile(run / f"{name}.json", _json)
                      for name in ("watchdog", "gateway", "drain", "cordon")}
        self.events = ChangedFile(events_path(stack.root), newest_events, missing=())
        self.spawns = ChangedFile(stack.logs_dir / "supervisord.log", lambda path: count_spawns(path, None))
        self.logs: dict[tuple[str, str], ChangedFile] = {}
        self.gpus = GpuSource(nvml)
        self.owners = GpuOwners()
        self.selected: tuple[str, str | None] | None = None     # (program, "stdout" | "stderr" | None: newest)
        self.metrics_url, self.metrics_headers, self.metrics_problem = self._metrics_target()

    def _metrics_target(self) -> tuple[str | None, dict, str | None]:
        api = self.stack.api
        if api.kind != "gateway":
            return None, {}, None
        from baremetal.config.api_keys import probe_key

        try:
            key = probe_key(api)
        except BaremetalError as error:
            return None, {}, f"no API key to read it with ({error})"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return f"http://{connect_host(api.host)}:{api.port}/metrics", headers, None

    def read(self) -> Reading:
        """Everything, now."""
        now_s = self.clock()
        infos, error = self._processes()
        watchdog = self.files["watchdog"].read()
        fresh = _fresh_watchdog(watchdog, now_s, self.stack.watchdog.interval_s)
        gpus, gpus_from, no_gpu = self.gpus.read(watchdog, fresh)
        text, metrics_error = self._metrics()
        return Reading(time_s=now_s, processes=infos, supervisord_error=error, watchdog=watchdog,
                       gateway_state=self.files["gateway"].read(), drain=self.files["drain"].read(),
                       cordon=self.files["cordon"].read(), metrics_text=text, metrics_error=metrics_error,
                       gpus=gpus, gpus_from=gpus_from, no_gpu_reason=no_gpu,
                       gpu_owners=self.owners.owners(gpus, infos or ()), spawns=self.spawns.read(),
                       events=self.events.read(), log=self._log())

    def _processes(self) -> tuple[tuple[ProcessInfo, ...] | None, str | None]:
        try:
            return tuple(self.client.processes()), None
        except BaremetalError as error:
            return None, str(error)

    def _metrics(self) -> tuple[str | None, str | None]:
        if self.metrics_url is None:
            return None, self.metrics_problem
        try:
            answer = self.http.get(self.metrics_url, timeout=METRICS_TIMEOUT_S, headers=self.metrics_headers)
        except (OSError, ValueError) as error:
            return None, f"{self.metrics_url}: {type(error).__name__}: {error}".rstrip(": ")
        if answer.status_code != 200:
            return None, f"{self.metrics_url} answered {answer.status_code}"
        return answer.text, None

    def log_path(self, program: str, stream: str) -> Path:
        """Where supervisord writes a program's stdout or stderr."""
        return self.stack.logs_dir / (f"{program}.err.log" if stream == "stderr" else f"{program}.log")

    def _log(self) -> LogTail | None:
        if not self.selected:
            return None
        program, stream = self.selected
        if stream is None:         # the stream written last (vLLM and most servers log to stderr)
            times = {s: (_stat_key(self.log_path(program, s)) or (0, 0, 0))[2] for s in ("stderr", "stdout")}
            stream = max(times, key=lambda s: times[s])
        key = (program, stream)
        if key not in self.logs:
            self.logs[key] = ChangedFile(self.log_path(program, stream), _log_lines, missing=())
        path = self.log_path(program, stream)
        return LogTail(program, stream, str(path), self.logs[key].read())

    def close(self) -> None:
        """Release NVML."""
        self.gpus.close()


def _log_lines(path: Path) -> tuple[str, ...]:
    return tuple(line.decode("utf-8", errors="replace") for line in last_lines(path, LOG_LINES))


def _fresh_watchdog(document: dict | None, now_s: float, interval_s: float) -> bool:
    try:
        return now_s - float(document["updated_s"]) <= watchdog_max_age_s(interval_s)     # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return False
