"""Readings into Frames: the one place where `top` decides what to show (pure: no I/O).

The builder keeps the short history that rates and sparklines need: the gateway's counters of the last
minutes (requests/s and tokens/s over ten seconds, errors, migrations and the time to first byte over a
minute) and each GPU's utilisation.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping

from baremetal.cli.top.frame import EventRow, Frame, GpuRow, KeyRow, ModelRow, ProgramRow, Reading
from baremetal.cli.top.gateway_page import GatewayCounts, ModelCounts, increase, quantile, read_counts
from baremetal.plan.spec import ProgramSpec
from baremetal.stack.status import WATCHDOG_MIN_AGE_S

RATE_WINDOW_S = 10.0           # requests/s and tokens/s: over the last ten seconds
MINUTE_S = 60.0                # errors, migrations, time to first byte: over the last minute
HISTORY_S = 300.0              # sparklines: the last five minutes
GATEWAY_FRESH_S = 15.0         # the gateway rewrites gateway.json at least every 5 s
DRAIN_GRACE_S = 60.0           # CONTRACTS.md: drain entries past until_s + 60 s are ignored


class FrameBuilder:
    """Turns Readings into Frames, keeping the gateway readings and GPU utilisations of the last minutes."""

    def __init__(self, stack_name: str, specs: list[ProgramSpec], watchdog_interval_s: float, gateway: bool,
                 interval_s: float = 1.0):
        self.stack_name = stack_name
        self.interval_s = interval_s
        self.specs = specs
        self.watchdog_max_age_s = watchdog_max_age_s(watchdog_interval_s)
        self.gateway = gateway
        self.counts: deque[GatewayCounts] = deque()
        self.tokens: dict[str, deque[tuple[float, float]]] = {}
        self.total_tokens: deque[tuple[float, float]] = deque()
        self.utilization: dict[int, deque[tuple[float, float]]] = {}

    def build(self, reading: Reading) -> Frame:
        """The frame for one reading (and the reading joins the history)."""
        now_s = reading.time_s
        watchdog, age_s, fresh = self._watchdog(reading)
        programs = self._programs(reading, watchdog if fresh else {}, fresh)
        models, keys, note = self._gateway(reading, programs)
        return Frame(stack=self.stack_name, time_s=now_s, supervisord_error=reading.supervisord_error,
                     programs=programs, models=models, keys=keys, gpus=self._gpus(reading),
                     no_gpu_reason=None if reading.gpus else reading.no_gpu_reason, gpus_from=reading.gpus_from,
                     events=tuple(_event(event) for event in reversed(reading.events)),
                     watchdog_age_s=age_s, watchdog_fresh=fresh, gateway_note=note,
                     tokens_history=tuple(value for _t, value in self.total_tokens), log=reading.log,
                     interval_s=self.interval_s)

    def _watchdog(self, reading: Reading) -> tuple[Mapping[str, Any], float | None, bool]:
        document = reading.watchdog
        try:
            age_s = reading.time_s - float(document["updated_s"])       # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            return {}, None, False
        programs = document.get("programs") if isinstance(document.get("programs"), dict) else {}
        return programs, age_s, age_s <= self.watchdog_max_age_s

    def _programs(self, reading: Reading, watchdog: Mapping[str, Any], fresh: bool) -> tuple[ProgramRow, ...]:
        specs = {spec.name: spec for spec in self.specs}
        infos = {info.name: info for info in reading.processes or ()}
        names = [spec.name for spec in self.specs] + sorted(set(infos) - set(specs))
        backends = gateway_state(reading, "backends")
        draining = _draining(reading)
        memory = _gpu_memory(reading)
        rows = []
        for name in names:
            info, spec = infos.get(name), specs.get(name)
            view = watchdog.get(name) if isinstance(watchdog.get(name), dict) else None
            if spec is not None and spec.role == "watchdog" and info is not None:
                # The watchdog does not judge itself: it is ready while its report is fresh.
                view = {"healthy": fresh, "phase": "reporting" if fresh else "silent",
                        "reason": "" if fresh else "its report is missing or stale"}
            backend = backends.get(name) or {}
            view = view or {}
            rows.append(ProgramRow(
                name=name, state=info.state.name if info else ("NOT LOADED" if reading.processes is not None else "?"),
                pid=(info.pid or None) if info else None, uptime_s=info.uptime_s if info else None,
                ready=view.get("healthy"), verdict=_verdict(view), reason=str(view.get("reason") or ""),
                restarts=None if reading.spawns is None else max(0, reading.spawns.get(name, 0) - 1),
                watchdog_restarts=view.get("restarts"), port=spec.port if spec else None,
                gpus=spec.gpus if spec else None, gpu_memory_bytes=memory.get(name),
                model=spec.model if spec else None, draining=bool(backend.get("draining")) or name in draining,
                in_flight=backend.get("in_flight"), evidence=view.get("evidence")))
        return tuple(rows)

    def _gateway(self, reading: Reading, programs: tuple[ProgramRow, ...]):
        """(model rows, key rows, why there are no figures) from the page and gateway.json."""
        models = list(dict.fromkeys(spec.model for spec in self.specs if spec.model))
        note = None
        if not self.gateway:
            note = "no gateway in this stack (api.kind is not \"gateway\"): no request figures"
        elif reading.metrics_text is None:
            note = f"gateway metrics unavailable: {reading.metrics_error or 'not read'}"
        else:
            self._remember(read_counts(reading.metrics_text, reading.time_s))
        newest = self.counts[-1] if self.counts and reading.metrics_text is not None else None
        window = _before(self.counts, reading.time_s - RATE_WINDOW_S)
        minute = _before(self.counts, reading.time_s - MINUTE_S)
        held = {name: entry.get("held") for name, entry in gateway_state(reading, "models").items()}
        rows = []
        for name in models + sorted(set(newest.models if newest else ()) - set(models)):
            counts = newest.models.get(name, ModelCounts()) if newest else None
            members = [row for row in programs if row.model == name]
            ready = [row.ready for row in members]
            rows.append(ModelRow(
                name=name, backends=len(members), ready_backends=None if None in ready else sum(map(bool, ready)),
                requests_per_s=_rate(newest, window, name, "requests"),
                in_flight=None if counts is None else int(counts.in_flight),
                held=held.get(name) if held.get(name) is not None else (
                    None if counts is None or counts.held is None else int(counts.held)),
                migrated_per_min=_per_minute(newest, minute, name, "migrated"),
                ttft_p50_s=None if counts is None else quantile(
                    0.5, counts.first_byte_buckets, minute.models.get(name, ModelCounts()).first_byte_buckets
                    if minute else ()),
                tokens_per_s=_rate(newest, window, name, "tokens"),
                errors_per_min=_per_minute(newest, minute, name, "errors"),
                tokens_history=tuple(value for _t, value in self.tokens.get(name, ()))))
        return tuple(rows), self._keys(newest, window, minute), note

    def _keys(self, newest: GatewayCounts | None, window: GatewayCounts | None,
              minute: GatewayCounts | None) -> tuple[KeyRow, ...]:
        """Rows per key name and model; none when no key has a name ("-" is the unnamed keys' label)."""
        if newest is None or all(key == "-" for key, _model in newest.keys):
            return ()
        rows = []
        for (key, model), counts in sorted(newest.keys.items()):
            def rate(field_name: str, older: GatewayCounts | None, per_s: bool) -> float | None:
                if older is None or newest.time_s <= older.time_s:
                    return None
                old = getattr(older.keys.get((key, model)), field_name, None)
                grown = increase(getattr(counts, field_name), old) or 0.0
                return grown / (newest.time_s - older.time_s) * (1.0 if per_s else 60.0)

            rows.append(KeyRow(key, model, rate("requests", window, True), rate("tokens", window, True),
                               rate("errors", minute, False), rate("rate_limited", minute, False)))
        return tuple(rows)

    def _remember(self, counts: GatewayCounts) -> None:
        previous = self.counts[-1] if self.counts else None
        self.counts.append(counts)
        while self.counts and self.counts[0].time_s < counts.time_s - HISTORY_S - MINUTE_S:
            self.counts.popleft()
        if previous is None or counts.time_s <= previous.time_s:
            return
        total = 0.0
        for name, model in counts.models.items():
            if model.tokens is None:
                continue
            old = previous.models.get(name)
            rate = (increase(model.tokens, old.tokens if old else None) or 0.0) / (counts.time_s - previous.time_s)
            _push(self.tokens.setdefault(name, deque()), counts.time_s, rate)
            total += rate
        if any(model.tokens is not None for model in counts.models.values()):
            _push(self.total_tokens, counts.time_s, total)

    def _gpus(self, reading: Reading) -> tuple[GpuRow, ...]:
        cordoned = (reading.cordon or {}).get("gpus") if isinstance(reading.cordon, Mapping) else None
        rows = []
        for gpu in reading.gpus:
            index = int(gpu.get("index", -1))
            history = self.utilization.setdefault(index, deque())
            if gpu.get("utilization_gpu_percent") is not None:
                _push(history, reading.time_s, float(gpu["utilization_gpu_percent"]))
            cordon = (cordoned or {}).get(str(index)) if isinstance(cordoned, Mapping) else None
            holders = tuple((reading.gpu_owners.get(p.get("pid")) or f"pid {p.get('pid')}",
                             int(p.get("memory_used_bytes") or 0)) for p in gpu.get("processes") or ())
            rows.append(GpuRow(
                index=index, name=gpu.get("name"), utilization_percent=gpu.get("utilization_gpu_percent"),
                memory_used_bytes=gpu.get("memory_used_bytes"), memory_total_bytes=gpu.get("memory_total_bytes"),
                temperature_c=gpu.get("temperature_c"), power_w=gpu.get("power_w"),
                power_limit_w=gpu.get("power_limit_w"),
                throttle=tuple(r for r in gpu.get("throttle_reasons") or () if r != "gpu_idle"),
                ecc_uncorrected=gpu.get("ecc_uncorrected_volatile"),
                cordoned=(str(cordon.get("reason") or "cordoned") if isinstance(cordon, Mapping) else None),
                programs=holders, utilization_history=tuple(value for _t, value in history)))
        return tuple(rows)


def watchdog_max_age_s(interval_s: float) -> float:
    """How old the watchdog's report may be and still count (as `status` counts it)."""
    return max(WATCHDOG_MIN_AGE_S, 5 * interval_s)


def gateway_state(reading: Reading, section: str) -> Mapping[str, Mapping[str, Any]]:
    """One section of gateway.json ("backends" by program, "models" by name) while the file is fresh;
    {} otherwise (no gateway, a dead one, or one that does not write it yet)."""
    state = reading.gateway_state
    if not isinstance(state, Mapping) or not _fresh(state, reading.time_s, GATEWAY_FRESH_S):
        return {}
    entries = state.get(section)
    return {name: entry for name, entry in entries.items() if isinstance(entry, Mapping)} \
        if isinstance(entries, Mapping) else {}


def _gpu_memory(reading: Reading) -> dict[str, int]:
    """Bytes of GPU memory each program's processes hold, over every GPU."""
    memory: dict[str, int] = {}
    for gpu in reading.gpus:
        for process in gpu.get("processes") or ():
            owner = reading.gpu_owners.get(process.get("pid"))
            if owner:
                memory[owner] = memory.get(owner, 0) + int(process.get("memory_used_bytes") or 0)
    return memory


def _draining(reading: Reading) -> set[str]:
    """Programs listed in drain.json whose deadline (plus the grace readers allow) has not passed."""
    programs = (reading.drain or {}).get("programs") if isinstance(reading.drain, Mapping) else None
    if not isinstance(programs, Mapping):
        return set()
    found = set()
    for name, entry in programs.items():
        until_s = entry.get("until_s") if isinstance(entry, Mapping) else None
        if isinstance(until_s, (int, float)) and reading.time_s <= until_s + DRAIN_GRACE_S:
            found.add(name)
    return found


def _fresh(document: Mapping[str, Any], now_s: float, max_age_s: float) -> bool:
    try:
        return now_s - float(document["updated_s"]) <= max_age_s
    except (KeyError, TypeError, ValueError):
        return False


def _verdict(view: Mapping[str, Any] | None) -> str:
    if not view:
        return "-"
    phase = str(view.get("phase") or "-")
    kind = view.get("hang_kind")
    return f"{phase} ({kind})" if kind else phase


def _before(history: deque[GatewayCounts], time_s: float) -> GatewayCounts | None:
    """The newest reading taken at or before `time_s`, else the oldest one (a window not yet full)."""
    if len(history) < 2:
        return None
    chosen = history[0]
    for counts in history:
        if counts.time_s > time_s:
            break
        chosen = counts
    return chosen if chosen is not history[-1] else None


def _rate(newest: GatewayCounts | None, older: GatewayCounts | None, model: str, name: str) -> float | None:
    if newest is None or older is None or newest.time_s <= older.time_s:
        return None
    new = getattr(newest.models.get(model, ModelCounts()), name)
    if new is None:
        return None
    old = older.models.get(model)
    return (increase(new, getattr(old, name) if old else None) or 0.0) / (newest.time_s - older.time_s)


def _per_minute(newest: GatewayCounts | None, older: GatewayCounts | None, model: str, name: str) -> float | None:
    """How many in the last minute (scaled from a shorter history while top has run less than a minute)."""
    rate = _rate(newest, older, model, name)
    return None if rate is None else rate * MINUTE_S


def _push(history: deque[tuple[float, float]], time_s: float, value: float) -> None:
    history.append((time_s, value))
    while history and history[0][0] < time_s - HISTORY_S:
        history.popleft()


def _event(event: Mapping[str, Any]) -> EventRow:
    try:
        time_s = float(event.get("time_s", 0))
    except (TypeError, ValueError):
        time_s = 0.0
    return EventRow(time_s, event.get("program"), str(event.get("kind", "?")), str(event.get("message", "")), event)
