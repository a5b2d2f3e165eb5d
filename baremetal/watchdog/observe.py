"""One tick's look at one program: supervisord's state, a liveness probe, progress, its processes.

A `ProgramObserver` keeps what it needs between ticks (the previous counters, its process tree, the
canary in flight) and turns each look into a `policy.Observation`; it never raises.

The gateway is the first witness: its gateway.json says, per backend, how many requests are in flight
and when a byte of theirs last arrived. Requests in flight are work pending; bytes arriving are progress.
So a hang is seen from the first user request that waits on it, even where the engine's own gauges
read 0 (they do on an H100 with a request stuck inside).

The canary covers what no request covers: an engine nothing has used for `idle_probe_interval` (no
request through the gateway, its counters still) gets one cheap real request (a 1-token completion, a
one-word embedding, a one-document rerank: probes.py's deep probe, with `X-Request-Id:
baremetal-canary-PROGRAM-N`). An engine whose counters stop after moving with no request through the
gateway (no gateway runs, or clients bypass it) also gets one, once, in case its gauges froze with
requests inside. An unanswered canary is work
pending; an answered one is progress. An idle, healthy engine thus answers one canary per
idle_probe_interval, a busy one none, and a frozen one leaves it unanswered.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from baremetal.host.processes import TreeWatcher
from baremetal.plan.spec import ProgramSpec
from baremetal.stack.gateway_view import BackendView
from baremetal.stack.probes import ProbeResult, probe
from baremetal.supervisord.client import ProcessInfo
from baremetal.supervisord.states import ProcessState
from baremetal.watchdog.engine_progress import EngineProgress, fastchat_progress, read_vllm_progress
from baremetal.watchdog.policy import Observation

CANARY_KINDS = ("vllm",)
AUTH_STATUSES = (401, 403)
IDLE_LOOK_S = 5.0          # an idle engine behind the gateway: /health and /metrics at most this often


@dataclass
class _Canary:
    future: Future
    sent_s: float
    start_s: float           # the process instance it was sent to


@dataclass
class ProgramObserver:
    """Observes one program; `observe` is called once per tick (from a worker thread)."""

    spec: ProgramSpec
    http: Any                                # get/post with timeout= (httplite.LiteClient, httpx.Client)
    probe_timeout_s: float
    canary_timeout_s: float
    canary_pool: Executor | None             # None: no canary (watchdog.canary = false)
    api_key: str | None = None
    busy_cpu_fraction: float = 0.2
    idle_probe_interval_s: float = 30.0      # a canary only after this long without any use
    notes: list[str] = field(default_factory=list)   # things worth an event (a canary the server refused)
    _previous: EngineProgress | None = None
    _tree: TreeWatcher | None = None
    _canary: _Canary | None = None
    _canary_broken_for: float | None = None  # start_s of the instance that refused the canary
    _instance: float = 0.0
    _canaries_sent: int = 0
    _last_canary_s: float = 0.0              # when the last canary was sent
    _last_use_s: float | None = None         # last sign of use by anyone but the canary (None: not ready yet)
    _last_byte_s: float | None = None        # the gateway's last byte from it, at the previous look
    _unwitnessed_use_s: float = 0.0          # last time its counters moved with no request through the gateway
    _witness_busy: bool = False              # the gateway had requests of it in flight at the previous look
    _look_s: float = 0.0                     # the previous look
    _idle_at_look: bool = False              # that look found it idle and healthy (nothing pending, no canary)

    def observe(self, info: ProcessInfo | None, now_s: float, witness: BackendView | None = None,
                gateway_up: bool = False) -> Observation:
        """Look at the program once; never raises. `witness`: the gateway's view of it (None: the gateway
        does not route to it, or no gateway runs); `gateway_up`: a fresh gateway.json exists."""
        if info is None:
            return Observation(time_s=now_s, state=ProcessState.UNKNOWN, detail="not known to supervisord")
        base = dict(time_s=now_s, state=info.state, pid=info.pid, start_s=info.start_s,
                    exit_status=info.exit_status)
        if info.start_s != self._instance:
            self._new_instance(info)
        if info.state != ProcessState.RUNNING:
            return Observation(**base, detail=info.description or info.spawn_error)
        reading = self._tree.read() if self._tree else None
        cpu_s, elapsed_s = (reading.cpu_s, reading.elapsed_s) if reading else (0.0, 0.0)
        stopped = reading.stopped if reading else ()
        spec_probe = self.spec.probe
        if spec_probe is None:
            return Observation(**base, cpu_s=cpu_s, stopped=stopped)
        if not stopped and self._still_idle(now_s, witness, gateway_up):
            return Observation(**base, probe_ok=True, detail=f"idle: last asked {now_s - self._look_s:.1f}s ago",
                               cpu_s=cpu_s)
        self._idle_at_look = False
        result = self._liveness()
        ok, detail = result.ok, result.detail
        progressed, pending, pending_detail = False, False, ""
        bytes_arrived = self._bytes_arrived(witness)
        if spec_probe.kind == "vllm" and ok:
            progressed, pending, pending_detail, ok, detail = self._vllm(info, now_s, detail, witness, gateway_up)
        elif spec_probe.kind == "fastchat-worker" and ok:
            progress = fastchat_progress(result.body)
            pending = bool(progress.pending)
            pending_detail = progress.detail
            # No counters: a worker that computes (generating) counts as progressing.
            progressed = pending and elapsed_s > 0 and cpu_s >= self.busy_cpu_fraction * elapsed_s
        if ok and spec_probe.kind in ("vllm", "fastchat-worker") and witness is not None and witness.in_flight:
            pending = True
            pending_detail = ", ".join(part for part in (pending_detail, _in_flight_words(witness)) if part)
            progressed = progressed or bytes_arrived
        return Observation(**base, probe_ok=ok, detail=detail, latency_s=result.latency_s, pending=pending,
                           progressed=progressed, cpu_s=cpu_s, stopped=stopped, pending_detail=pending_detail)

    def _still_idle(self, now_s: float, witness: BackendView | None, gateway_up: bool) -> bool:
        """Whether this look can do without the engine's /health and /metrics: a vLLM server behind a
        running gateway that was idle and healthy at its last look, less than IDLE_LOOK_S ago, with no
        request through the gateway since and no canary due. An idle engine then answers two requests
        every IDLE_LOOK_S rather than every tick; a request through the gateway is seen at once (its
        witness file), one that bypasses it at the next look."""
        if not (self._idle_at_look and gateway_up and witness is not None and witness.in_flight == 0):
            return False
        if (witness.last_request_s or 0.0) >= self._look_s - 1.0 or now_s - self._look_s >= IDLE_LOOK_S:
            return False
        return now_s - max(self._last_use_s or 0.0, self._last_canary_s) < self.idle_probe_interval_s

    def _new_instance(self, info: ProcessInfo) -> None:
        self._instance = info.start_s
        self._idle_at_look = False
        self._previous = None
        self._canary = None                   # one sent to the old process tells nothing about the new
        self._last_use_s = None
        self._tree = TreeWatcher(info.pid) if info.pid else None

    def _liveness(self) -> ProbeResult:
        assert self.spec.probe is not None
        result = probe(self.spec.probe, self.http, timeout_s=self.probe_timeout_s, api_key=self.api_key)
        if not result.ok and self.spec.probe.kind == "openai" and result.status_code in AUTH_STATUSES:
            return ProbeResult(True, result.latency_s, f"/v1/models answered {result.status_code}: alive (the "
                               "watchdog has no valid API key)", result.status_code)
        return result

    def _bytes_arrived(self, witness: BackendView | None) -> bool:
        """Whether the gateway received bytes from it since the previous look."""
        last = witness.last_byte_s if witness is not None else None
        arrived = last is not None and self._last_byte_s is not None and last > self._last_byte_s
        self._last_byte_s = last if last is not None else self._last_byte_s
        return arrived

    def _vllm(self, info: ProcessInfo, now_s: float, detail: str, witness: BackendView | None,
              gateway_up: bool) -> tuple[bool, bool, str, bool, str]:
        """(progressed, pending, pending detail, probe ok, detail) for a vLLM server."""
        assert self.spec.probe is not None
        progress = read_vllm_progress(self.spec.probe.url, self.http, self.probe_timeout_s)
        canary_out = self._canary is not None
        answered, canary_failure = self._collect_canary(info)
        moved = progress.advanced_since(self._previous)
        progressed = moved or answered
        if progress.counters is not None:
            self._previous = progress
        if progress.sleeping:
            return False, False, "sleeping", True, detail + "; engine sleeping"
        used = (moved and not canary_out) or bool(progress.pending) or (witness is not None and witness.in_flight > 0)
        witnessed = witness is not None and (witness.in_flight > 0 or self._witness_busy
                                             or (witness.last_request_s or 0.0) >= self._look_s - 1.0)
        if moved and not canary_out and not witnessed:
            self._unwitnessed_use_s = now_s           # clients that bypass the gateway: it cannot see them wait
        self._witness_busy, self._look_s = witness is not None and witness.in_flight > 0, now_s
        went_quiet = (self._last_use_s is not None and self._last_use_s > self._last_canary_s and not used
                      and (not gateway_up or self._unwitnessed_use_s > self._last_canary_s))
        if used or self._last_use_s is None:
            self._last_use_s = now_s
        if witness is not None and witness.last_request_s is not None:
            self._last_use_s = max(self._last_use_s, witness.last_request_s)
        idle_s = now_s - max(self._last_use_s, self._last_canary_s)
        if idle_s >= self.idle_probe_interval_s or went_quiet:
            self._send_canary(info, now_s)        # nothing covers it: ask it
        in_flight = self._canary is not None      # from the tick it is sent: the stall began at the last progress
        pending_parts = [progress.detail] if progress.pending else []
        if in_flight:
            pending_parts.append(f"the watchdog's canary request unanswered for {now_s - self._canary.sent_s:.1f}s")
        pending = bool(progress.pending) or in_flight
        if canary_failure:
            return progressed, pending, ", ".join(pending_parts), False, canary_failure
        self._idle_at_look = (progress.counters is not None and not pending and not progressed and not used)
        return progressed, pending, ", ".join(pending_parts), True, f"{detail}; {progress.detail}"

    def _collect_canary(self, info: ProcessInfo) -> tuple[bool, str | None]:
        """(answered, failure): a finished canary is progress, or a 5xx failure, or a refusal to note."""
        canary = self._canary
        if canary is None or not canary.future.done():
            return False, None
        self._canary = None
        result: ProbeResult = canary.future.result()
        if result.ok:
            return True, None
        if result.status_code is not None and 400 <= result.status_code < 500:
            self._canary_broken_for = info.start_s
            self.notes.append(f"the canary request was refused ({result.detail}); stall detection for this "
                              "process relies on vLLM's own gauges")
            return False, None
        if result.status_code is not None:
            return False, f"canary request failed: {result.detail}"
        return False, None        # no answer (connection lost, its own timeout): the stall rule decides

    def _send_canary(self, info: ProcessInfo, now_s: float) -> None:
        if (self.canary_pool is None or self._canary is not None or self._canary_broken_for == info.start_s
                or self.spec.probe is None or self.spec.probe.kind not in CANARY_KINDS):
            return
        self._canaries_sent += 1
        request_id = f"baremetal-canary-{self.spec.name}-{self._canaries_sent}"
        future = self.canary_pool.submit(probe, self.spec.probe, self.http, self.canary_timeout_s, True,
                                         self.api_key, request_id)
        self._canary = _Canary(future, now_s, info.start_s)
        self._last_canary_s = now_s

    @property
    def pids(self) -> tuple[int, ...]:
        """The pids of its process tree at the last look."""
        return self._tree.last_pids if self._tree else ()


def _in_flight_words(witness: BackendView) -> str:
    return (f"{witness.in_flight} request(s) in flight through the gateway, the oldest without a byte for "
            f"{witness.oldest_wait_s:.1f}s")
