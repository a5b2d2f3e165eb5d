"""The watchdog loop: every `interval`, look at each program, decide, act, and tell.

One tick: supervisord's process list (one XML-RPC call), a GPU sample and the Xid events since the last
tick (NVML), one observation per program (probes run in parallel, so one slow server does not delay
the others), then the pure policy decides. Restarts and stops run in a worker thread, so probing goes
on meanwhile. Every tick rewrites <root>/run/watchdog.json; every change of phase and every action
goes to <root>/logs/events.jsonl, with evidence (log tail, GPU readings, probe history) before acting.

The watchdog never acts while supervisord is not RUNNING (it is shutting down or reloading), never
touches a program an operator stopped, and stops first at shutdown (priority 900), so `baremetal down`
is never "repaired".
"""

from __future__ import annotations

import resource
import shutil
import threading
import time
import traceback
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from baremetal.errors import BaremetalError
from baremetal.host.nvml import GpuMonitor, GpuSample
from baremetal.plan.spec import ProgramSpec
from baremetal.supervisord.client import SupervisorClient
from baremetal.supervisord.states import ProcessState, SupervisorState
from baremetal.watchdog import recovery
from baremetal.watchdog.events import Event, EventLog
from baremetal.watchdog.evidence import Collector, Request, folder_for, prune, run_command
from baremetal.watchdog.hang_kind import HangVerdict, classify, gpu_spin, nvml_alone
from baremetal.watchdog.load_progress import LoadWatch
from baremetal.watchdog.metrics import render
from baremetal.watchdog.observe import ProgramObserver
from baremetal.watchdog.planned import Outside, PlannedChanges, hands_off
from baremetal.watchdog.policy import (STICKY_PHASES, Action, Decision, History, Observation, Phase, Policy, decide,
                                       gpu_report, program_gpus, remember, restored, settle)
from baremetal.watchdog.remains import Remains
from baremetal.watchdog.replacement import Mover, Placements, cordon_faults
from baremetal.watchdog.restart import RestartReport, log_tail
from baremetal.watchdog.state_file import read_state, write_state

GPU_WINDOW = 120                 # ticks of GPU readings kept: what the hang kind is read from
SPIN_MIN_READINGS = 3            # readings per GPU before a spin counts


@dataclass
class Watched:
    """One program under watch."""

    spec: ProgramSpec
    observer: ProgramObserver
    history: History
    last: Observation | None = None
    gpus: tuple[int, ...] = ()
    job: Future | None = None
    job_action: Action = Action.NONE
    load: LoadWatch | None = None
    load_instance: float = 0.0
    instance: float = 0.0
    hang: HangVerdict | None = None
    evidence: str | None = None
    evidence_s: float | None = None


class WatchdogLoop:
    """Watches the programs of one stack. `run()` loops until `stop()`; `tick()` is one cycle."""

    def __init__(self, config: Any, specs: list[ProgramSpec], supervisor_factory: Callable[[], SupervisorClient],
                 http: Any, monitor: GpuMonitor, events: EventLog, state_file: Path, api_key: str | None = None,
                 clock: Callable[[], float] = time.time, cluster: Any = None, remote: Any = None,
                 stack: Any = None, collector: Collector | None = None,
                 outside: Outside | None = None):
        self.config = config                      # config.model.Watchdog: the [watchdog] settings
        self.cluster = cluster                    # cluster.watch.ClusterWatch on a cluster's head, else None
        self.remote = remote                      # cluster.remote.RemoteWatch (models on other nodes), else None
        self.nodes: list[dict] = []
        self.remote_entries: dict[str, dict] = {}
        self.policy = Policy.from_config(config)
        self.supervisor_factory = supervisor_factory
        self.supervisor = supervisor_factory()
        self.monitor = monitor
        self.events = events
        self.state_file = Path(state_file)
        self.planned = PlannedChanges(self.state_file.parent, outside)   # gateway.json and drain.json
        self.clock = clock
        self.stopping = threading.Event()
        watched_specs = [spec for spec in specs if spec.role != "watchdog"]
        self.probe_pool = ThreadPoolExecutor(max_workers=max(2, len(watched_specs)), thread_name_prefix="probe")
        self.canary_pool = ThreadPoolExecutor(max_workers=max(1, len(watched_specs)),
                                              thread_name_prefix="canary") if config.canary else None
        self.job_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="restart")
        self.remains = Remains(self.job_pool, self._event)      # what a program's previous instance left running
        saved = (read_state(self.state_file) or {}).get("programs", {})
        self.watched = {spec.name: Watched(spec, ProgramObserver(
            spec, http, config.probe_timeout_s, config.busy_stall_after_s + config.probe_timeout_s, self.canary_pool,
            api_key=api_key, busy_cpu_fraction=self.policy.busy_cpu_fraction,
            idle_probe_interval_s=config.idle_probe_interval_s), restored(saved.get(spec.name)))
            for spec in watched_specs}
        self.previous_gpus: list[GpuSample] = []
        self.xid_counts: Counter = Counter()
        self.run_dir = Path(state_file).parent                  # <root>/run
        self.root = self.run_dir.parent
        self.collector = collector if collector is not None else Collector(http)
        self.placements = Placements(stack) if stack is not None else None
        self.mover = Mover(stack) if stack is not None else None
        self.gpu_window: deque[list[GpuSample]] = deque(maxlen=GPU_WINDOW)
        self.hang_counts: Counter = Counter()
        for watched in self.watched.values():
            logs = self.root / "logs"
            watched.load = LoadWatch((logs / f"{watched.spec.name}.log", logs / f"{watched.spec.name}.err.log"))
        self.ticks, self.tick_s = 0, 0.0
        self.supervisor_problem: str | None = None

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        """Tick every interval until `stop()`; then let running restarts finish without starting anything."""
        self._event("watchdog_started", f"watching {len(self.watched)} program(s) every "
                    f"{self.config.interval_s:g}s; GPUs: {self._gpu_words()}")
        next_s = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception as error:  # noqa: BLE001 - a bug here must not stop the watching: say it, go on
                self._event("watchdog_error", f"{type(error).__name__}: {error}", details={
                    "traceback": traceback.format_exc().splitlines()[-12:]})
            next_s = max(next_s + self.config.interval_s, time.monotonic())
            self.stopping.wait(max(0.0, next_s - time.monotonic()))
        self.job_pool.shutdown(wait=True, cancel_futures=True)
        self._collect_jobs()
        self._event("watchdog_stopped", "stopped")

    def stop(self) -> None:
        self.stopping.set()

    def tick(self) -> None:
        """One cycle: look, decide, act, write the state file."""
        began = time.monotonic()
        now = self.clock()
        infos, daemon_running = self._supervisor_view()
        samples = self.monitor.sample()
        xids = self.monitor.xid_events()
        self.xid_counts.update((event.gpu_index, event.xid) for event in xids)
        report = gpu_report(self.previous_gpus, samples, xids, self.policy)
        for index, fault in report.faults.items():
            self._event("gpu", f"{fault}: hardware fault; programs on GPU {index} are stopped, not restarted there")
        for warning in report.warnings:
            self._event("gpu", warning)
        if report.faults:
            uuids = {sample.index: sample.uuid for sample in samples}
            for gpu in cordon_faults(self.run_dir, dict(report.faults), uuids):
                self._event("cordon", f"GPU {gpu} cordoned: {report.faults[gpu]}; no program is started on it "
                            f"until `baremetal uncordon {gpu}`")
        self.previous_gpus = samples or self.previous_gpus
        if samples:
            self.gpu_window.append(samples)
        self._collect_jobs()
        self.planned.read(now)
        if infos is not None:
            self.remains.look(infos)
            idle = [w for w in self.watched.values() if w.job is None]
            futures = {w.spec.name: self.probe_pool.submit(w.observer.observe, infos.get(w.spec.name), now,
                                                           *self.planned.witness(w.spec.name))
                       for w in idle}
            for watched in idle:
                self._judge(watched, futures[watched.spec.name].result(), samples, report.faults,
                            daemon_running, now)
        if self.cluster is not None:
            self._cluster_tick(now, samples, daemon_running)
        if self.remote is not None:
            self._remote_tick(now)
        self.ticks += 1
        self.tick_s = time.monotonic() - began
        write_state(self.state_file, self.programs_document() | self.remote_entries, [s.to_json() for s in samples],
                    now, self.config.interval_s, self.monitor.reason, nodes=self.nodes if self.cluster else None)

    def _supervisor_view(self) -> tuple[dict | None, bool]:
        try:
            infos = {info.name: info for info in self.supervisor.processes()}
            running = self.supervisor.state() == SupervisorState.RUNNING
        except BaremetalError as error:
            if self.supervisor_problem is None:
                self._event("supervisor", f"cannot read supervisord: {error}; not acting until it answers")
            self.supervisor_problem = str(error)
            return None, False
        if self.supervisor_problem is not None:
            self._event("supervisor", "supervisord answers again")
            self.supervisor_problem = None
        return infos, running

    # -- deciding and acting ---------------------------------------------------------------------
    def _judge(self, watched: Watched, observation: Observation, samples: list[GpuSample],
               faults_by_gpu: dict[int, str], daemon_running: bool, now: float) -> None:
        name = watched.spec.name
        self._follow_placement(watched, observation)
        watched.gpus = program_gpus(watched.spec.gpus, samples, watched.observer.pids)
        observation = self._enrich(watched, observation, samples, now)
        observation, change = self.planned.judge(name, observation, watched.history,
                                                 lambda words: self._event("planned", words, name))
        watched.history = remember(watched.history, observation)
        watched.last = observation
        faults = tuple(dict.fromkeys(faults_by_gpu[g] for g in watched.gpus if g in faults_by_gpu))
        decision = decide(watched.history, observation, faults, self.policy, now)
        if not faults:
            decision = hands_off(decision, observation, change, now, self.policy.load_timeout_s + 600.0)
        if decision.cause:
            watched.hang = self._classify(watched, decision, observation, now)
            if watched.hang is not None:
                decision = replace(decision, reason=f"{watched.hang.words}: {decision.reason}")
        elif decision.phase == Phase.READY and decision.healthy:
            watched.hang = None
        if decision.action != Action.NONE and not daemon_running:
            decision = replace(decision, action=Action.NONE,
                               reason=f"{decision.reason}; not acting: supervisord is not RUNNING (shutting down?)")
        before = watched.history.phase
        watched.history = settle(watched.history, decision, now)
        for note in watched.observer.notes:
            self._event("canary", note, name)
        watched.observer.notes.clear()
        if decision.action != Action.NONE:
            self._act(watched, decision, samples)
        elif decision.phase != before:
            self._event(decision.phase.value, self._transition_message(decision, observation, now), name)

    def _transition_message(self, decision: Decision, observation: Observation, now: float) -> str:
        if decision.phase == Phase.LOADING and observation.planned_start:
            return f"{decision.reason} (started by an operator: not counted in the restart budget)"
        if decision.phase == Phase.READY and observation.start_s:
            return f"ready after {now - observation.start_s:.1f}s ({observation.detail})"
        return decision.reason

    def _cluster_tick(self, now: float, samples: list[GpuSample], daemon_running: bool) -> None:
        """Ray's view of the nodes: say what changed, and restart the programs on Ray once per lost node
        (vLLM whose node is gone hangs with /health 200 until a 300 s RPC timeout)."""
        tick = self.cluster.tick(now)
        self.nodes = [asdict(state) for state in tick.states]
        for line in tick.events:
            self._event("node", line)
        for restart in tick.restarts:
            watched = self.watched.get(restart.program)
            if watched is None or watched.job is not None or watched.history.phase in STICKY_PHASES \
                    or watched.history.phase == Phase.STOPPED:
                continue
            if not daemon_running:
                self._event("node", f"{restart.reason}; not restarting {restart.program}: supervisord is not RUNNING",
                            restart.program)
                continue
            decision = Decision(Phase.RESTARTING, False, restart.reason, Action.RESTART)
            watched.history = settle(watched.history, decision, now)
            self._act(watched, decision, samples)

    def _remote_tick(self, now: float) -> None:
        """Probe the models on other nodes; the gateway routes around those that do not answer."""
        entries = self.remote.tick(now)
        for name, entry in entries.items():
            before = self.remote_entries.get(name)
            if before is not None and before.get("healthy") != entry.get("healthy"):
                how = "answers again" if entry.get("healthy") else f"does not answer: {entry.get('reason')}"
                self._event("remote", f"{name} on node {entry.get('node')} {how}", name)
        self.remote_entries = entries

    def _follow_placement(self, watched: Watched, observation: Observation) -> None:
        """A new process runs where the rendered file put it: the GPUs the plan now places it on."""
        if self.placements is None or not observation.start_s or observation.start_s == watched.instance:
            return
        watched.instance = observation.start_s
        placement = self.placements.current().get(watched.spec.name)
        if placement is not None:
            watched.spec = replace(watched.spec, gpus=placement.gpus, blocked=placement.blocked)

    def _window(self, gpus: tuple[int, ...], since_s: float | None) -> list[GpuSample]:
        """Readings of `gpus` since `since_s`, oldest first."""
        return [s for tick in self.gpu_window for s in tick if s.index in gpus and (since_s is None or s.time_s >= since_s)]

    def _enrich(self, watched: Watched, observation: Observation, samples: list[GpuSample], now: float) -> Observation:
        """Add what the loop knows: signs of load progress while it loads, a GPU spin while work waits."""
        if observation.state != ProcessState.RUNNING or watched.load is None:
            return observation
        if observation.start_s != watched.load_instance:
            watched.load.reset()
            watched.load_instance = observation.start_s
        if watched.history.ready_s is None and observation.probe_ok is not None:
            signs = watched.load.look(watched.observer.pids, samples, observation.cpu_s, now)
            observation = replace(observation, load_progress=signs)
        if observation.pending and watched.gpus:
            window = self._window(watched.gpus, watched.history.calm_s)
            if len(window) >= SPIN_MIN_READINGS * len(watched.gpus):
                observation = replace(observation, gpu_spin=gpu_spin(window))
        return observation

    def _classify(self, watched: Watched, decision: Decision, observation: Observation,
                  now: float) -> HangVerdict | None:
        history = watched.history
        stalled_s = now - history.calm_s if history.calm_s is not None else 0.0
        cpu_share = history.stall_cpu_s / stalled_s if stalled_s > 0 else None
        return classify(decision.cause, observation.stopped, observation.pending, cpu_share,
                        self._window(watched.gpus, history.calm_s), self.policy.busy_cpu_fraction)

    def _act(self, watched: Watched, decision: Decision, samples: list[GpuSample]) -> None:
        """Write the event (naming the evidence folder), then gather the evidence, stop and start (or
        re-place) in a worker thread."""
        name, now = watched.spec.name, self.clock()
        running = watched.last is not None and watched.last.pid and watched.last.state == ProcessState.RUNNING
        folder = folder_for(self.root, name, now) if running else None
        hang = None if watched.hang is None else {"kind": watched.hang.kind, "words": watched.hang.words,
                                                  "detail": watched.hang.detail}
        probes = [o.to_json() for o in watched.history.recent]
        evidence = {"action": decision.action.value, "supervisord_pid": watched.last.pid if watched.last else None,
                    "gpus": [s.to_json() for s in samples if s.index in watched.gpus],
                    "probes": probes[-10:], "log_tail": log_tail(self.supervisor, name),
                    "hang_kind": hang and hang["kind"], "hang": hang, "evidence": str(folder) if folder else None}
        kind = "restart" if decision.action == Action.RESTART else decision.phase.value
        self._event(kind, decision.reason, name, evidence)
        if hang:
            self.hang_counts[(name, hang["kind"])] += 1
        request = None
        if folder is not None:
            watched.evidence = str(folder)
            spec_probe = watched.spec.probe
            readings = self._window(watched.gpus, watched.history.calm_s)[-60:] or \
                [s for s in samples if s.index in watched.gpus]
            request = Request(program=name, folder=folder, pid=watched.last.pid, reason=decision.reason, time_s=now,
                              action=decision.action.value, hang=hang, gpus=watched.gpus,
                              gpu_readings=tuple(s.to_json() for s in readings), probes=tuple(probes),
                              metrics_url=f"{spec_probe.url}/metrics" if spec_probe and spec_probe.kind == "vllm" else None,
                              log_files=tuple(watched.load.log_paths) if watched.load else (),
                              nccl_prefix=watched.spec.environment.get("TORCH_NCCL_DEBUG_INFO_TEMP_FILE"),
                              nvml_alone=nvml_alone(readings))
        client = self.supervisor_factory()
        watched.job_action = decision.action
        move = decision.phase == Phase.HARDWARE_FAULT and self.mover is not None and bool(watched.spec.gpus)
        job = recovery.Job(client, name, watched.gpus, self.monitor, self.config.kill_after_s,
                           decision.action == Action.RESTART, lambda: not self.stopping.is_set() and client.is_running(),
                           self.run_dir, (self.collector, request) if request else None, move, self.mover,
                           self.config.gpu_reset, (run_command, shutil.which("nvidia-smi")))
        watched.job = self.job_pool.submit(recovery.run, job)

    def _collect_jobs(self) -> None:
        for watched in self.watched.values():
            if watched.job is None or not watched.job.done():
                continue
            job, watched.job = watched.job, None
            outcome: recovery.Outcome = job.result() if not job.cancelled() else recovery.Outcome(
                RestartReport(watched.spec.name, error="cancelled: the watchdog is stopping"))
            self._settle_job(watched, outcome)

    def _settle_job(self, watched: Watched, outcome: recovery.Outcome) -> None:
        """Tell what a recovery did, and follow a program that moved to other GPUs."""
        name, report = watched.spec.name, outcome.report
        for line in outcome.cordoned:
            gpu = line.split(":")[0].split()[-1]
            self._event("cordon", f"{line}; cordoned: no program is started on it until `baremetal uncordon {gpu}`")
        move = outcome.move
        parts = [report.summary(say_start=move is None)]
        details: dict[str, Any] = {"report": report.to_json()}
        if outcome.evidence is not None:
            watched.evidence_s = outcome.evidence.elapsed_s
            parts.append(outcome.evidence.summary())
            details |= {"evidence": str(outcome.evidence.folder), "evidence_s": round(outcome.evidence.elapsed_s, 3)}
            prune(self.root, self.config.evidence_keep)
        if move is not None:
            parts.append(move.summary(name))
            details["move"] = asdict(move)
            if move.error is None:
                watched.spec = replace(watched.spec, gpus=move.gpus, blocked=move.blocked)
            now = self.clock()
            if move.started:
                watched.history = settle(watched.history, Decision(Phase.RESTARTING, False, move.summary(name),
                                                                   Action.RESTART), now)
            elif watched.history.phase in STICKY_PHASES or move.blocked:
                reason = f"{watched.history.reason}; {move.summary(name)}"
                watched.history = replace(watched.history, phase=Phase.HARDWARE_FAULT, reason=reason, phase_since_s=now)
        parts += outcome.resets
        started = outcome.started and (watched.job_action == Action.RESTART or bool(move and move.started))
        self._event("restarted" if started else "stopped", "; ".join(parts), name, details)

    # -- telling ---------------------------------------------------------------------------------
    def _event(self, kind: str, message: str, program: str | None = None, details: dict | None = None) -> None:
        self.events.write(Event(self.clock(), kind, message, program, details or {}))
        print(f"{program or 'watchdog'}: {kind}: {message}", flush=True)

    def _gpu_words(self) -> str:
        if not self.monitor.available:
            return self.monitor.reason or "not watched"
        return f"{self.monitor.count} (Xid events from {len(self.monitor.xid_gpus)})"

    def programs_document(self) -> dict[str, dict]:
        """Each program's entry in the state file (see watchdog_state for the contract)."""
        document = {}
        for name, watched in self.watched.items():
            history, last = watched.history, watched.last
            phase = history.phase
            document[name] = {
                "phase": phase.value, "healthy": phase == Phase.READY and history.failures == 0
                and (last is None or last.probe_ok is not False), "reason": history.reason,
                "restarts": history.restarts_total, "last_restart_s": max(history.restarts_s, default=None),
                "since_s": history.phase_since_s, "state": last.state.name if last else None,
                "pid": last.pid if last else None, "gpus": list(watched.gpus),
                "probe_latency_s": last.latency_s if last else None, "probe_failures": history.failures,
                "restart_times_s": list(history.restarts_s),
                "hang_kind": watched.hang.kind if watched.hang else None,
                "hang": watched.hang.detail if watched.hang else None, "evidence": watched.evidence,
                "evidence_s": watched.evidence_s, "blocked": watched.spec.blocked}
        return document

    def metrics_page(self) -> str:
        """The Prometheus page (called from the metrics server's thread)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        gpus = [s.to_json() for s in self.previous_gpus]
        cordoned = self.placements.cordoned if self.placements is not None else frozenset()
        return render(self.programs_document(), gpus, {"ticks": self.ticks, "tick_s": self.tick_s,
                      "cpu_s": usage.ru_utime + usage.ru_stime}, dict(self.xid_counts),
                      hangs=dict(self.hang_counts), cordoned=cordoned)

