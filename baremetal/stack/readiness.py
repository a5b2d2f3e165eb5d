"""Wait until every program runs and serves: RUNNING in supervisord and its (deep) probe passing.

`next_track` decides, purely, what one more look at a program means (loading, ready, or failed and why);
`Waiter` polls supervisord, runs probes in threads so that a slow model never delays the others, and
tells a `ProgressLines` what changed. supervisord, the probes and the clock are injected.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from baremetal.plan.spec import ProgramSpec
from baremetal.stack.probes import ProbeResult
from baremetal.supervisord.client import ProcessInfo, SupervisorClient
from baremetal.supervisord.states import LIVE_STATES, ProcessState

MAX_CRASHES = 3          # exits seen while waiting before `up` calls a program broken
STOPPED_GRACE_S = 5.0    # a freshly added program is STOPPED until supervisord's loop starts it


@dataclass(frozen=True)
class Track:
    """What is known about one program while waiting."""

    state: ProcessState | None = None    # None: not seen yet, or not loaded in supervisord
    pid: int = 0
    crashes: int = 0
    ready: bool = False
    detail: str = ""                     # the last probe's answer, or why it failed
    failure: str | None = None           # set when waiting for it is pointless
    loading_s: float = 0.0               # how long its current process has run

    @property
    def label(self) -> str:
        """A short word for progress lines."""
        if self.failure:
            return "FAILED"
        if self.ready:
            return "ready"
        return self.state.name if self.state is not None else "NOT LOADED"


def next_track(previous: Track, info: ProcessInfo | None, probe: ProbeResult | None, has_probe: bool,
            waited_s: float) -> Track:
    """The program's track after one more look: supervisord's view `info` and the newest probe result
    (None: no new result). Pure."""
    if info is None:
        return replace(previous, state=None, ready=False, failure="is not loaded in supervisord (is its "
                       "conf.d file missing? run `baremetal up` again)")
    state, crashes = info.state, previous.crashes
    # Exits after RUNNING: supervisord restarts those forever (autorestart), so count them here. Exits
    # before RUNNING (BACKOFF) are bounded by its startretries and end in FATAL.
    entered_crash = state == ProcessState.EXITED and previous.state not in (None, ProcessState.EXITED)
    missed_crash = (previous.state == ProcessState.RUNNING and state in LIVE_STATES
                    and previous.pid and info.pid and info.pid != previous.pid)
    if entered_crash or missed_crash:
        crashes += 1
    loading_s = max(0.0, info.now_s - info.start_s) if info.start_s and state in LIVE_STATES else 0.0
    track = Track(state=state, pid=info.pid, crashes=crashes, detail=previous.detail, loading_s=loading_s)
    if state == ProcessState.FATAL:
        return replace(track, failure=f"supervisord gave up starting it ({info.description or 'FATAL'})")
    if state == ProcessState.STOPPED and (previous.state not in (None, ProcessState.STOPPED)
                                          or waited_s >= STOPPED_GRACE_S):
        return replace(track, failure="is stopped (by `baremetal stop` or supervisorctl?); "
                                      "`baremetal start` it or run `baremetal up` again")
    if crashes >= MAX_CRASHES:
        return replace(track, failure=f"exited {crashes} times while starting ({info.description})")
    if state != ProcessState.RUNNING:
        return track
    if not has_probe:
        return replace(track, ready=True, detail="no probe")
    same_process = previous.pid == info.pid
    if probe is None:
        return replace(track, ready=previous.ready and same_process)
    return replace(track, ready=probe.ok, detail=probe.detail)


@dataclass(frozen=True)
class WaitResult:
    ok: bool
    tracks: dict[str, Track]
    elapsed_s: float
    timed_out: bool = False

    @property
    def failed(self) -> dict[str, Track]:
        """Programs that failed, or (after a timeout) that were not ready."""
        return {name: track for name, track in self.tracks.items() if track.failure or not track.ready}


class Waiter:
    """Polls supervisord and probes until every program in `specs` is ready, one fails, or time runs out."""

    def __init__(self, client: SupervisorClient, specs: list[ProgramSpec], prober: Callable[[ProgramSpec], ProbeResult],
                 progress: "ProgressLines", clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, poll_s: float = 0.25, probe_interval_s: float = 1.0):
        self.client, self.specs, self.prober, self.progress = client, specs, prober, progress
        self.clock, self.sleep, self.poll_s, self.probe_interval_s = clock, sleep, poll_s, probe_interval_s

    def wait(self, timeout_s: float) -> WaitResult:
        """Block until done; `timeout_s` bounds the whole wait."""
        started = self.clock()
        tracks = {spec.name: Track() for spec in self.specs}
        pending: dict[str, Future] = {}
        last_probe: dict[str, float] = {}
        while True:
            now = self.clock()
            infos = {info.name: info for info in self.client.processes()}
            for spec in self.specs:
                result = self._collect(pending, spec.name)
                new = next_track(tracks[spec.name], infos.get(spec.name), result, spec.probe is not None,
                              now - started)
                self.progress.changed(spec.name, tracks[spec.name], new)
                tracks[spec.name] = new
                due = now - last_probe.get(spec.name, -1e9) >= self.probe_interval_s
                if spec.probe and new.state == ProcessState.RUNNING and not new.ready \
                        and spec.name not in pending and due:
                    pending[spec.name] = _in_background(self.prober, spec)
                    last_probe[spec.name] = now
            elapsed = self.clock() - started
            if any(track.failure for track in tracks.values()):
                return WaitResult(False, tracks, elapsed)
            if all(track.ready for track in tracks.values()):
                return WaitResult(True, tracks, elapsed)
            if elapsed >= timeout_s:
                return WaitResult(False, tracks, elapsed, timed_out=True)
            self.progress.loading({name: t.loading_s or (now - started) for name, t in tracks.items()
                                   if not t.ready}, now)
            if pending:     # wake up as soon as a probe answers: an unchanged stack is ready at once
                futures_wait(list(pending.values()), timeout=self.poll_s, return_when=FIRST_COMPLETED)
            else:
                self.sleep(self.poll_s)

    @staticmethod
    def _collect(pending: dict[str, Future], name: str) -> ProbeResult | None:
        future = pending.get(name)
        if future is None or not future.done():
            return None
        del pending[name]
        return future.result()


def watchdog_doubts(state_path: Path, names: list[str], timeout_s: float, max_age_s: float,
                    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                    wall_clock: Callable[[], float] = time.time) -> dict[str, str]:
    """Wait (at most `timeout_s`) until a running watchdog calls none of `names` loading (or stuck,
    restarting, ...): the gateway sends no requests to a program until the watchdog calls it ready.
    Returns those it still doubts, as name -> "phase: reason"; {} also when no watchdog reports."""
    from baremetal.stack.status import NOT_SERVING_PHASES, read_watchdog

    deadline = clock() + timeout_s
    while True:
        views, _age_s, fresh = read_watchdog(state_path, wall_clock(), max_age_s)
        doubts = {name: f"{view.phase}: {view.reason}" for name, view in views.items()
                  if fresh and name in names and view.phase in NOT_SERVING_PHASES}
        if not doubts or clock() >= deadline:
            return doubts
        sleep(0.1)


def _in_background(function: Callable, argument: object) -> Future:
    """Run `function(argument)` in a daemon thread: a probe still waiting for a slow engine must not
    keep Ctrl-C from ending the command (a thread pool would be joined at exit)."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(function(argument))
        except BaseException as error:  # noqa: BLE001 - handed to whoever reads the future
            future.set_exception(error)

    threading.Thread(target=run, name="probe", daemon=True).start()
    return future


class ProgressLines:
    """Progress lines for a person or a log: one line per state change, and a "still loading" line,
    redrawn in place on a terminal and printed every `every_s` seconds otherwise (no spinner garbage
    in a journal)."""

    def __init__(self, write: Callable[[str], None], is_tty: bool, every_s: float = 15.0):
        self.write, self.is_tty, self.every_s = write, is_tty, every_s
        self.last_loading_s: float | None = None
        self.first_s: float | None = None
        self.drawn = False

    def line(self, text: str) -> None:
        """A line that stays."""
        self._clear()
        self.write(text + "\n")

    def changed(self, name: str, before: Track, after: Track) -> None:
        """Print a line when a program's state or readiness changed."""
        if (before.label, before.pid) == (after.label, after.pid) or after.label == "NOT LOADED" and not after.failure:
            return
        if before.state is None and after.state == ProcessState.RUNNING and not after.ready and not after.failure:
            return          # already running when the wait began: say so once it is ready
        words = [f"  {name:<24} {after.label}"]
        if after.pid and after.state in LIVE_STATES and not after.ready:
            words.append(f"(pid {after.pid})")
        if after.ready:
            words.append(f"({after.detail})")
        if after.state == ProcessState.RUNNING and not after.ready and not after.failure:
            words.append("- waiting for its probe")
        if after.failure:
            words.append(after.failure)
        self.line(" ".join(words))

    def loading(self, waiting_s: dict[str, float], now_s: float) -> None:
        """Say which programs are still loading, and for how long."""
        if not waiting_s:
            return
        text = "still loading: " + ", ".join(f"{name} ({seconds:.0f}s)" for name, seconds in waiting_s.items())
        if self.is_tty:
            self._clear()
            self.write(text[:200])
            self.drawn = True
            return
        self.first_s = self.first_s if self.first_s is not None else now_s
        since = now_s - (self.last_loading_s if self.last_loading_s is not None else self.first_s)
        if since >= self.every_s:
            self.write(text + "\n")
            self.last_loading_s = now_s

    def _clear(self) -> None:
        if self.drawn:
            self.write("\r\x1b[K")
            self.drawn = False

    def close(self) -> None:
        """Remove an in-place line before the final words."""
        self._clear()
