"""When a program is stuck, and what to do about it: pure functions of (history, samples, policy, now).

The rules (README "The watchdog" says the same to operators):
- ready only after a first successful probe; a program not ready within `load_timeout` has failed;
- stuck: `unhealthy_after` probes failed in a row, or work pending with no progress for `stall_after`
  while its processes are not computing (a stopped process never is), or for `busy_stall_after`
  while they are (a kernel compile is slow, not hung);
- a hardware Xid or a rise in uncorrectable ECC errors on a GPU it uses: stop it and leave it stopped;
- restarts (by the watchdog, or supervisord restarting a program that exited) are counted: at most
  `max_restarts` within `restart_window`, each after a backoff that doubles; past that, give up and stop it;
- a program stopped by an operator (STOPPED) is left alone.
Nothing here does I/O or reads a clock, so every rule is tested with tables of cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Mapping

from baremetal.host.nvml import GpuSample, XidEvent
from baremetal.supervisord.states import DOWN_STATES, STAYS_DOWN_STATES, ProcessState

RECENT_OBSERVATIONS = 30       # kept as evidence for the event written before a restart


class Phase(str, Enum):
    LOADING = "loading"
    READY = "ready"
    STUCK = "stuck"
    RESTARTING = "restarting"
    FAILED = "failed"
    GIVEN_UP = "given_up"
    HARDWARE_FAULT = "hardware_fault"
    STOPPED = "stopped"          # stopped on purpose by an operator: left alone


STICKY_PHASES = frozenset({Phase.GIVEN_UP, Phase.HARDWARE_FAULT})   # kept until an operator starts it again


class Action(str, Enum):
    NONE = "none"
    RESTART = "restart"          # stop (if running) and start again
    STOP = "stop"                # stop and leave stopped


@dataclass(frozen=True)
class Policy:
    """The [watchdog] settings the rules use, in seconds."""

    interval_s: float = 1.0
    unhealthy_after: int = 3
    stall_after_s: float = 3.0
    busy_stall_after_s: float = 60.0
    load_timeout_s: float = 1800.0
    max_restarts: int = 5
    restart_window_s: float = 3600.0
    restart_backoff_s: float = 10.0
    max_backoff_s: float = 300.0
    busy_cpu_fraction: float = 0.2   # CPU share of one core that counts as "computing" during a stall
    gpu_temp_limit_c: int = 90
    start_stall_after_s: float = 300.0   # loading with no sign of progress (log, GPU memory, CPU, reads)
    spin_stall_after_s: float = 10.0     # no progress while the GPUs show a collective spin: not a compile

    @classmethod
    def from_config(cls, watchdog) -> "Policy":
        """From the stack file's [watchdog] table (config.model.Watchdog)."""
        return cls(interval_s=watchdog.interval_s, unhealthy_after=watchdog.unhealthy_after,
                   stall_after_s=watchdog.stall_after_s, busy_stall_after_s=watchdog.busy_stall_after_s,
                   load_timeout_s=watchdog.load_timeout_s, max_restarts=watchdog.max_restarts,
                   restart_window_s=watchdog.restart_window_s, restart_backoff_s=watchdog.restart_backoff_s,
                   gpu_temp_limit_c=watchdog.gpu_temp_limit_c, start_stall_after_s=watchdog.start_stall_after_s)


@dataclass(frozen=True)
class Observation:
    """One tick's look at one program."""

    time_s: float
    state: ProcessState
    pid: int = 0
    start_s: float = 0.0                 # when supervisord started the current process (0: never)
    exit_status: int | None = None
    probe_ok: bool | None = None         # None: nothing to probe (no health check, or not running)
    detail: str = ""                     # the probe's answer, or why it failed
    latency_s: float | None = None
    pending: bool = False                # work waits on it: requests in its gauges, an unanswered canary
    progressed: bool = False             # its counters moved since the previous observation
    cpu_s: float = 0.0                   # CPU seconds its processes used since the previous observation
    stopped: tuple[str, ...] = ()        # its processes in state T (SIGSTOP), as 'pid (name)'
    pending_detail: str = ""
    load_progress: tuple[str, ...] = ()  # while loading: the signs of progress since the last look (log, ...)
    gpu_spin: str | None = None          # its GPUs show a collective spin (hang_kind.gpu_spin): the readings
    planned_start: bool = False          # its process is new and was started by an operator's change

    def to_json(self) -> dict:
        return {"time_s": round(self.time_s, 3), "state": self.state.name, "pid": self.pid,
                "probe_ok": self.probe_ok, "detail": self.detail,
                "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
                "pending": self.pending, "progressed": self.progressed, "cpu_s": round(self.cpu_s, 3),
                "stopped": list(self.stopped), "pending_detail": self.pending_detail,
                "load_progress": list(self.load_progress), "gpu_spin": self.gpu_spin}


@dataclass(frozen=True)
class History:
    """What the watchdog remembers of one program. `remember` and `settle` return new ones."""

    start_s: float = 0.0                 # start time of the process being watched
    ready_s: float | None = None         # first successful probe of this process
    failures: int = 0                    # probes failed in a row since it was ready
    last_failure: str = ""
    calm_s: float | None = None          # last time nothing was pending, or its counters moved
    stall_cpu_s: float = 0.0             # CPU its processes used since calm_s
    restarts_s: tuple[float, ...] = ()   # recent restarts, by the watchdog or by supervisord (the budget)
    restarts_total: int = 0              # every restart seen
    expect_start: bool = False           # the watchdog restarted it: the next new process is already counted
    parked: bool = False                 # seen stopped after giving up: a later start is an operator's
    phase: Phase = Phase.LOADING
    phase_since_s: float = 0.0
    reason: str = ""
    recent: tuple[Observation, ...] = ()
    load_progress_s: float | None = None  # while loading: the last sign of progress (None: since its start)
    load_detail: str = ""                 # which signs those were

    def restarts_within(self, window_s: float, now_s: float) -> int:
        return sum(1 for when in self.restarts_s if now_s - when < window_s)


@dataclass(frozen=True)
class Decision:
    phase: Phase
    healthy: bool
    reason: str
    action: Action = Action.NONE
    cause: str | None = None     # why it is stuck (hang_kind.Cause): not_answering, no_progress, start_stalled, ...


@dataclass(frozen=True)
class GpuFindings:
    """What changed on the GPUs this tick: faults (by GPU index) that stop programs, and warnings."""

    faults: Mapping[int, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def remember(history: History, observation: Observation) -> History:
    """Fold one observation into the history: new processes, readiness, failures, stall clock."""
    now = observation.time_s
    if observation.start_s and observation.start_s != history.start_s:
        restarts, total = history.restarts_s, history.restarts_total
        # stopped, then started, or restarted by an operator through baremetal: not a restart to count
        by_operator = history.phase == Phase.STOPPED or observation.planned_start
        if history.start_s and not history.expect_start and not by_operator:
            restarts, total = _keep(restarts + (observation.start_s,)), total + 1   # it exited; supervisord restarted it
        phase, parked = history.phase, history.parked
        if phase in STICKY_PHASES and parked:
            restarts, phase, parked = (), Phase.LOADING, False   # an operator started it again: a fresh budget
        history = replace(history, start_s=observation.start_s, ready_s=None, failures=0, last_failure="",
                          calm_s=None, stall_cpu_s=0.0, restarts_s=restarts, restarts_total=total,
                          expect_start=False, phase=phase, parked=parked, load_progress_s=None, load_detail="")
    if history.phase in STICKY_PHASES and observation.state in STAYS_DOWN_STATES:
        history = replace(history, parked=True)
    running = observation.state == ProcessState.RUNNING
    ready_s, failures, last_failure = history.ready_s, history.failures, history.last_failure
    if running and observation.probe_ok:
        ready_s, failures = ready_s or now, 0
    elif running and observation.probe_ok is False:
        failures, last_failure = (failures + 1 if ready_s else 0), observation.detail
    calm_s, stall_cpu_s = history.calm_s, history.stall_cpu_s
    if not running or observation.progressed or not observation.pending or calm_s is None:
        calm_s, stall_cpu_s = now, 0.0
    else:
        stall_cpu_s += observation.cpu_s
    recent = (history.recent + (observation,))[-RECENT_OBSERVATIONS:]
    load_progress_s, load_detail = history.load_progress_s, history.load_detail
    if observation.load_progress:
        load_progress_s, load_detail = now, ", ".join(observation.load_progress)
    return replace(history, ready_s=ready_s, failures=failures, last_failure=last_failure, calm_s=calm_s,
                   stall_cpu_s=stall_cpu_s, recent=recent, load_progress_s=load_progress_s, load_detail=load_detail)


def decide(history: History, observation: Observation, faults: tuple[str, ...], policy: Policy,
           now_s: float) -> Decision:
    """The phase of a program and what to do, from its (advanced) history and the GPU faults under it."""
    state = observation.state
    if history.phase in STICKY_PHASES:
        action = Action.NONE if state in DOWN_STATES or state == ProcessState.STOPPING else Action.STOP
        return Decision(history.phase, False, history.reason, action)
    if faults:
        running = state not in DOWN_STATES
        return Decision(Phase.HARDWARE_FAULT, False,
                        f"{'; '.join(faults)}: {'stopped it; ' if running else ''}the GPU is cordoned: nothing is "
                        "started on it until it is fixed (reset or service) and `baremetal uncordon GPU`",
                        Action.STOP if running else Action.NONE)
    if state in (ProcessState.STOPPED, ProcessState.STOPPING):
        return Decision(Phase.STOPPED, False, "stopped by an operator (supervisorctl stop); the watchdog leaves it "
                        "alone" if state == ProcessState.STOPPED else "stopping")
    loop = _crash_loop(history, policy, now_s)
    if loop:
        return loop
    if state == ProcessState.FATAL:
        decision = _restart(history, policy, now_s, "supervisord gave up starting it (FATAL: it exited too "
                            "quickly each time)", Phase.FAILED)
        return replace(decision, action=Action.NONE) if decision.action == Action.STOP else decision
    if state in (ProcessState.EXITED, ProcessState.UNKNOWN):
        return Decision(Phase.FAILED, False, f"{state.name.lower()} (exit status {observation.exit_status})")
    if state in (ProcessState.STARTING, ProcessState.BACKOFF):
        what = "starting" if state == ProcessState.STARTING else "exited while starting; supervisord retries (BACKOFF)"
        return Decision(Phase.LOADING, False, what)
    return _running(history, observation, policy, now_s)


def _running(history: History, observation: Observation, policy: Policy, now_s: float) -> Decision:
    if observation.probe_ok is None:
        return Decision(Phase.READY, True, "running (no health check to probe)")
    if history.ready_s is None:
        loading_s = now_s - history.start_s
        if loading_s >= policy.load_timeout_s:
            return _restart(history, policy, now_s, f"not ready after {_duration(loading_s)} (load_timeout "
                            f"{_duration(policy.load_timeout_s)}); last probe: {observation.detail}", Phase.FAILED,
                            "load_timeout")
        quiet_s = now_s - (history.load_progress_s or history.start_s)
        if history.start_s and quiet_s >= policy.start_stall_after_s:
            return _restart(history, policy, now_s, f"no sign of loading progress for "
                            f"{_duration(quiet_s)} (its log, GPU memory, CPU time and reads all still; "
                            f"start_stall_after {_duration(policy.start_stall_after_s)}); loading for "
                            f"{_duration(loading_s)}; last probe: {observation.detail}", Phase.FAILED, "start_stalled")
        return Decision(Phase.LOADING, False, f"loading for {_duration(loading_s)} (last probe: {observation.detail})")
    if history.failures >= policy.unhealthy_after:
        frozen = f"; processes stopped (SIGSTOP): {', '.join(observation.stopped)}" if observation.stopped else ""
        return _restart(history, policy, now_s, f"{history.failures} probes failed in a row "
                        f"(unhealthy_after {policy.unhealthy_after}); last: {history.last_failure}{frozen}", Phase.STUCK,
                        "not_answering")
    stall = _stall(history, observation, policy, now_s)
    if stall:
        return _restart(history, policy, now_s, stall, Phase.STUCK, "no_progress")
    if history.failures:
        return Decision(Phase.READY, False, f"{history.failures} probe(s) failed: {history.last_failure}")
    return Decision(Phase.READY, True, "ready")


def _stall(history: History, observation: Observation, policy: Policy, now_s: float) -> str | None:
    """Why the program counts as stalled, or None: work pending, counters still, for too long."""
    if not observation.pending or history.calm_s is None:
        return None
    stalled_s = now_s - history.calm_s
    cpu_share = history.stall_cpu_s / stalled_s if stalled_s > 0 else 0.0
    computing = not observation.stopped and cpu_share >= policy.busy_cpu_fraction
    limit_s = policy.busy_stall_after_s if computing else policy.stall_after_s
    option = "busy_stall_after" if computing else "stall_after"
    if computing and observation.gpu_spin:      # spinning on a peer, not compiling: no need to wait a minute
        limit_s = min(limit_s, max(policy.stall_after_s, policy.spin_stall_after_s))
        option = "GPUs spinning"
    if stalled_s < limit_s:
        return None
    why = (f"processes stopped: {', '.join(observation.stopped)}" if observation.stopped
           else f"its processes used {cpu_share:.0%} of a core")
    if observation.gpu_spin:
        why += f"; {observation.gpu_spin}"
    pending = observation.pending_detail or "work pending"
    return f"no progress for {_duration(stalled_s)} with {pending} ({why}; {option} {_duration(limit_s)})"


def _crash_loop(history: History, policy: Policy, now_s: float) -> Decision | None:
    count = history.restarts_within(policy.restart_window_s, now_s)
    if count <= policy.max_restarts or history.expect_start:
        return None
    return Decision(Phase.GIVEN_UP, False, f"gave up: it exited and was restarted {count} times within "
                    f"{_duration(policy.restart_window_s)} (max_restarts {policy.max_restarts}); stopped it: see its "
                    "log (`baremetal events`, <root>/logs/), fix the cause, then `supervisorctl start` it",
                    Action.STOP)


def _restart(history: History, policy: Policy, now_s: float, why: str, phase: Phase,
             cause: str | None = None) -> Decision:
    """Restart within the budget (after a doubling backoff), or give up past it."""
    count = history.restarts_within(policy.restart_window_s, now_s)
    if count >= policy.max_restarts:
        return Decision(Phase.GIVEN_UP, False, f"{why}; gave up: {count} restarts within "
                        f"{_duration(policy.restart_window_s)} (max_restarts {policy.max_restarts}); stopped it: fix "
                        "the cause, then `supervisorctl start` it", Action.STOP, cause)
    wait_s = backoff_s(count, policy)
    since_s = now_s - max(history.restarts_s, default=float("-inf"))
    if since_s < wait_s:
        return Decision(phase, False, f"{why}; restart {count + 1}/{policy.max_restarts} in "
                        f"{_duration(wait_s - since_s)} (backoff)", cause=cause)
    return Decision(Phase.RESTARTING, False, f"{why}; restarting ({count + 1}/{policy.max_restarts} within "
                    f"{_duration(policy.restart_window_s)})", Action.RESTART, cause)


def backoff_s(restarts: int, policy: Policy) -> float:
    """Wait before the next restart: none for the first, then restart_backoff doubling, capped."""
    if restarts <= 0:
        return 0.0
    return min(policy.restart_backoff_s * 2 ** (restarts - 1), policy.max_backoff_s)


def settle(history: History, decision: Decision, now_s: float) -> History:
    """Record a decision: its phase (and since when), and a restart the watchdog is about to make."""
    since = history.phase_since_s if decision.phase == history.phase else now_s
    history = replace(history, phase=decision.phase, phase_since_s=since, reason=decision.reason)
    if decision.action == Action.RESTART:
        history = replace(history, restarts_s=_keep(history.restarts_s + (now_s,)),
                          restarts_total=history.restarts_total + 1, expect_start=True)
    return history


def _keep(restarts_s: tuple[float, ...]) -> tuple[float, ...]:
    return restarts_s[-200:]          # far more than any sane max_restarts


def gpu_report(previous: list[GpuSample], current: list[GpuSample], xids: list[XidEvent],
               policy: Policy) -> GpuFindings:
    """Faults (hardware Xids, new uncorrectable ECC errors, failed row remapping) and warnings."""
    before = {sample.index: sample for sample in previous}
    faults: dict[int, list[str]] = {}
    warnings: list[str] = []
    for event in xids:
        where = f"GPU {event.gpu_index}" if event.gpu_index is not None else "a GPU"
        text = f"{where} reported Xid {event.xid} ({event.description})"
        if event.hardware and event.gpu_index is not None:
            faults.setdefault(event.gpu_index, []).append(text)
        else:
            warnings.append(text)
    for sample in current:
        old = before.get(sample.index)
        if old is None:
            continue
        label = f"GPU {sample.index}"
        if _rose(old.ecc_uncorrected_volatile, sample.ecc_uncorrected_volatile):
            faults.setdefault(sample.index, []).append(
                f"{label} uncorrectable ECC errors rose from {old.ecc_uncorrected_volatile} to "
                f"{sample.ecc_uncorrected_volatile}")
        if sample.remap_failure and not old.remap_failure:
            faults.setdefault(sample.index, []).append(f"{label} row remapping failed")
        if sample.remap_pending and not old.remap_pending:
            warnings.append(f"{label} has remapped rows pending: reset the GPU when it is free to apply them")
        if _crossed(old.temperature_c, sample.temperature_c, policy.gpu_temp_limit_c):
            warnings.append(f"{label} is at {sample.temperature_c} C, at or over gpu_temp_limit "
                            f"{policy.gpu_temp_limit_c} C (throttling: {', '.join(sample.throttle_reasons or ()) or 'none'})")
    return GpuFindings(faults={index: "; ".join(texts) for index, texts in faults.items()}, warnings=tuple(warnings))


def program_gpus(pinned: tuple[int, ...] | None, samples: list[GpuSample], pids: tuple[int, ...]) -> tuple[int, ...]:
    """The GPUs a program uses: those pinned in the stack file, else those its processes hold memory on."""
    if pinned:
        return pinned
    if pinned == ():
        return ()
    mine = set(pids)
    return tuple(s.index for s in samples if any(p.pid in mine for p in s.processes or ()))


def _rose(before: int | None, after: int | None) -> bool:
    return before is not None and after is not None and after > before


def _crossed(before: int | None, after: int | None, limit: int) -> bool:
    return after is not None and after >= limit and (before is None or before < limit)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m" if seconds % 60 < 1 else f"{int(seconds // 60)}m{int(seconds % 60)}s"
    return f"{seconds / 3600:g}h" if seconds % 3600 == 0 else f"{seconds / 3600:.1f}h"


def restored(saved: dict | None) -> History:
    """What a previous run of the watchdog knew: the restart budget, and a give-up that still holds."""
    if not isinstance(saved, dict):
        return History()
    try:
        phase = Phase(saved.get("phase"))
    except ValueError:
        phase = Phase.LOADING
    sticky = phase in STICKY_PHASES
    return History(restarts_s=tuple(float(t) for t in saved.get("restart_times_s") or ()),
                   restarts_total=int(saved.get("restarts") or 0), phase=phase if sticky else Phase.LOADING,
                   phase_since_s=float(saved.get("since_s") or 0.0) if sticky else 0.0,
                   reason=str(saved.get("reason") or "") if sticky else "", parked=sticky)
