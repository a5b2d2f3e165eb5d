"""What others tell the watchdog each tick: the gateway's requests in flight per backend (gateway.json)
and the planned changes an operator is making through baremetal's CLI (drain.json).

A program an operator is changing (`restart`, `stop`, `up` applying an edit) is left alone until the
change is done: no restart of the watchdog's own, and its stop is an operator's stop. The process the
CLI started is not a restart against the budget (an operator's restart is not a fault). Pure functions
of (decision, observation, change); the reading is `Outside`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

from baremetal.host.files import CachedJson
from baremetal.stack.drain import Change, DrainEntry, active_drains, changes
from baremetal.stack.gateway_view import BackendView, GatewayView, gateway_view
from baremetal.supervisord.states import ProcessState
from baremetal.watchdog.policy import Action, Decision, History, Observation, Phase

RUNNING_STATES = (ProcessState.RUNNING, ProcessState.STARTING, ProcessState.BACKOFF)


@dataclass(frozen=True)
class OutsideView:
    """One tick's reading of the two files."""

    gateway: GatewayView | None = None                      # None: no gateway runs (or it is not writing)
    changes: Mapping[str, Change] = field(default_factory=dict)
    drains: Mapping[str, DrainEntry] = field(default_factory=dict)

    def backend(self, program: str) -> BackendView | None:
        return self.gateway.backend(program) if self.gateway is not None else None


class Outside:
    """Reads gateway.json and drain.json (stat-ed every tick, parsed when they change)."""

    def __init__(self, gateway_path: Path, drain_path: Path):
        self.gateway = CachedJson(gateway_path, check_interval_s=0.0)
        self.drain = CachedJson(drain_path, check_interval_s=0.0)

    def read(self, now_s: float) -> OutsideView:
        document = self.drain.document()
        return OutsideView(gateway_view(self.gateway.document(), now_s), changes(document),
                           active_drains(document, now_s))


class PlannedChanges:
    """The loop's side of the two files: one reading a tick, and each operator's change said once."""

    def __init__(self, run_dir: Path, outside: Outside | None = None):
        self.outside = outside or Outside(run_dir / "gateway.json", run_dir / "drain.json")
        self.view = OutsideView()
        self.seen_s: dict[str, float] = {}       # since_s of the change last said, per program

    def read(self, now_s: float) -> None:
        self.view = self.outside.read(now_s)

    def witness(self, program: str) -> tuple[BackendView | None, bool]:
        """The gateway's view of `program`, and whether a gateway runs at all."""
        return self.view.backend(program), self.view.gateway is not None

    def judge(self, program: str, observation: Observation, history: History,
              say: Callable[[str], None]) -> tuple[Observation, Change | None]:
        """The observation marked by the program's change (if any), said once when the change begins."""
        change = self.view.changes.get(program)
        since = change.since_s if change is not None and change.done_s is None else None
        if since is not None and since != self.seen_s.get(program):
            self.seen_s[program] = since
            say(change_words(change, self.view.drains.get(program), self.view.backend(program)))
        return planned(observation, history, change), change


def planned(observation: Observation, history: History, change: Change | None) -> Observation:
    """The observation, marked when its process is new and the one an operator's change started."""
    if (change is not None and observation.start_s and observation.start_s != history.start_s
            and change.started_process(observation.start_s)):
        return replace(observation, planned_start=True)
    return observation


def hands_off(decision: Decision, observation: Observation, change: Change | None, now_s: float,
              max_s: float) -> Decision:
    """The decision while an operator changes the program: down is an operator's stop, and no action."""
    if change is None or not change.active(now_s, max_s):
        return decision
    what = f"being changed by an operator (baremetal {'up' if change.reason == 'update' else change.reason})"
    if observation.state not in RUNNING_STATES:
        return Decision(Phase.STOPPED, False, f"{what}: stopped for now; the watchdog leaves it alone")
    if decision.action != Action.NONE:
        return replace(decision, action=Action.NONE, reason=f"{decision.reason}; not acting: {what}")
    return decision


def change_words(change: Change, drain: DrainEntry | None, backend: BackendView | None) -> str:
    """An event's words for a change the watchdog has just seen begin."""
    verb = {"update": "a change applied by `baremetal up`", "stop": "`baremetal stop`"}.get(
        change.reason, f"`baremetal {change.reason}`")
    words = f"{verb} by an operator: the watchdog keeps its hands off until it is done"
    if drain is not None:
        in_flight = backend.in_flight if backend is not None else 0
        words += (f"; taken out of the gateway's routing first ({in_flight} request(s) in flight, "
                  f"{drain.until_s - drain.since_s:g}s to finish)")
    return words
