"""Planned changes of running programs that cost their clients nothing: drain, stop, start, one replica
at a time.

A planned stop (`restart`, `stop`, `down PROGRAM`, `up` applying a change) first takes the program out of
routing (drain.json: the gateway sends it no new requests), waits until the gateway shows none of its
requests in flight (at most the drain timeout; no fresh gateway.json: nothing to wait for), then stops
it (stack.stopping). Replicas of one model change one at a time: the next one is drained only when the
previous one serves again, so the model keeps serving throughout; if one does not come back, the rest
are left as they are. Every change is recorded in drain.json for the watchdog, which keeps its hands
off the program meanwhile and does not count the new process against its restart budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

from baremetal.config.model import Stack
from baremetal.errors import BaremetalError
from baremetal.plan.spec import ProgramSpec
from baremetal.stack.drain import DrainFile, Reason
from baremetal.stack.gateway_view import GatewayView, read_gateway
from baremetal.stack.stopping import stop_programs
from baremetal.supervisord.client import SupervisorClient

Say = Callable[[str], None]
DRAIN_POLL_S = 0.1
REASON_WORDS = {"restart": "its restart", "stop": "its stop", "update": "the change `up` applies"}
ROUTED_WAIT_S = 30.0      # at most this long (or 5 watchdog intervals) for the gateway to route to it again
DrainState = Literal["no_gateway", "not_routed", "unseen", "draining", "drained"]


def rolling_batches(names: list[str], model_of: Mapping[str, str | None]) -> list[list[str]]:
    """`names` in batches that may change together: the k-th batch holds the k-th replica of every model,
    so no model ever has two of its replicas down at once; programs serving no model go in the first.
    Order within the stack is kept. Pure."""
    batches: list[list[str]] = []
    seen: dict[str | None, int] = {}
    for name in names:
        model = model_of.get(name)
        index = seen.get(model, 0) if model is not None else 0
        if model is not None:
            seen[model] = index + 1
        while len(batches) <= index:
            batches.append([])
        batches[index].append(name)
    return batches


def drain_state(view: GatewayView | None, program: str, since_s: float) -> tuple[DrainState, int]:
    """(where the drain of `program` stands, requests of it in flight) from the gateway's file. Pure.

    The gateway must have seen the drain (a file written after it began, with the backend marked
    draining) before "0 in flight" means anything: a request routed just before may still be starting."""
    if view is None:
        return "no_gateway", 0
    backend = view.backend(program)
    if backend is None:
        return "not_routed", 0
    if view.updated_s < since_s or not backend.draining:
        return "unseen", backend.in_flight
    return ("drained" if backend.in_flight == 0 else "draining"), backend.in_flight


@dataclass(frozen=True)
class DrainOutcome:
    """What the drain of one program did to its requests in flight."""

    program: str
    waited_s: float
    in_flight: int = 0          # when the gateway took it out of routing
    left: int = 0               # still in flight when the drain ended: past the drain timeout
    state: DrainState = "drained"

    def summary(self) -> str:
        if self.state == "no_gateway":
            return f"{self.program}: no gateway is running: no request to drain"
        if self.state == "not_routed":
            return f"{self.program}: the gateway sends it no requests: nothing to drain"
        if self.left:
            return (f"drain of {self.program} timed out after {self.waited_s:.1f}s: {self.left} of "
                    f"{self.in_flight} request(s) still in flight are cut")
        return f"drained {self.program} in {self.waited_s:.1f}s: {self.in_flight} request(s) in flight finished"


class Changer:
    """Drains, stops and starts programs of one running stack for a planned change."""

    def __init__(self, stack: Stack, client: SupervisorClient, specs: Mapping[str, ProgramSpec], say: Say,
                 drain_timeout_s: float, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.stack, self.client, self.specs, self.say = stack, client, specs, say
        self.drain_timeout_s = drain_timeout_s
        self.clock, self.sleep = clock, sleep
        self.file = DrainFile(stack.drain_path, clock)

    def routed(self, name: str) -> bool:
        """Whether the stack's gateway sends requests to this program."""
        spec = self.specs.get(name)
        return self.stack.api.kind == "gateway" and spec is not None and spec.model is not None

    def take_down(self, names: list[str], reason: Reason) -> list[DrainOutcome]:
        """Drain `names` (those the gateway routes to), then stop them all."""
        routed = [name for name in names if self.routed(name)] if self.drain_timeout_s > 0 else []
        since = self.file.begin(names, reason, routed, self.drain_timeout_s)
        if routed:
            others = sorted({other for name in routed for other in self._replicas_left(name, names)})
            self.say(f"draining {', '.join(routed)} before {REASON_WORDS[reason]}: no new requests "
                     f"({self._where_new_requests_go(others)}); waiting for those in flight "
                     f"(drain_timeout {self.drain_timeout_s:g}s)")
        outcomes = self.wait_drained(routed, since, since + self.drain_timeout_s)
        for outcome in outcomes:
            self.say(outcome.summary())
        stopwait = {name: float(spec.stopwaitsecs) for name, spec in self.specs.items()}
        for stopped in stop_programs(self.client, names, stopwait):
            self.say(stopped.summary())
        return outcomes

    def _where_new_requests_go(self, others: list[str]) -> str:
        if others:
            return f"they go to {', '.join(others)}"
        if getattr(self.stack.api, "hold_timeout_s", 0):
            return "no other replica: the gateway holds them until it is back"
        return "no other replica: they get a 503 until it is back"

    def _replicas_left(self, name: str, changing: list[str]) -> list[str]:
        model = self.specs[name].model
        return [other for other, spec in self.specs.items()
                if spec.model == model and other != name and other not in changing]

    def wait_drained(self, names: list[str], since_s: float, until_s: float) -> list[DrainOutcome]:
        """Poll gateway.json until none of `names` has a request in flight, or until `until_s`."""
        outcomes: dict[str, DrainOutcome] = {}
        first: dict[str, int] = {}
        while len(outcomes) < len(names):
            now = self.clock()
            view = read_gateway(self.stack.gateway_state_path, now)
            for name in [name for name in names if name not in outcomes]:
                state, in_flight = drain_state(view, name, since_s)
                if state in ("draining", "drained"):
                    first.setdefault(name, in_flight)
                if state in ("no_gateway", "not_routed", "drained"):
                    outcomes[name] = DrainOutcome(name, now - since_s, first.get(name, 0), 0, state)
                elif now >= until_s:
                    outcomes[name] = DrainOutcome(name, now - since_s, max(first.get(name, 0), in_flight),
                                                  in_flight, state)
            if len(outcomes) < len(names):
                self.sleep(DRAIN_POLL_S)
        return [outcomes[name] for name in names]

    def starting(self, names: list[str]) -> None:
        """Record that the CLI starts these now (their next process is an operator's, not a restart)."""
        self.file.starting(names)

    def finish(self, names: list[str]) -> None:
        """Back in routing (ready again, or stopped for good)."""
        self.file.finish(names)

    def roll(self, names: list[str], reason: Reason, bring_back: Callable[[list[str]], None],
             wait: Callable[[list[str]], None] | None, wait_last: bool = True) -> None:
        """Change `names` batch by batch: take each batch down, `bring_back` it (start it, or re-add it with
        its new settings), `wait` until it serves, put it back in routing. The batches of replicas are
        always waited for (that is what keeps their model serving); the last one only with `wait_last`.
        When a batch does not come back, the batches after it are left untouched."""
        batches = rolling_batches(names, {name: spec.model for name, spec in self.specs.items()})
        for index, batch in enumerate(batches):
            waited = wait is not None and (wait_last or index < len(batches) - 1)
            try:
                self.take_down(batch, reason)
                bring_back(batch)
                if waited:
                    try:
                        wait(batch)
                    except BaremetalError as error:
                        rest = [name for later in batches[index + 1:] for name in later]
                        if rest:
                            error.args = (f"{error}\nNot changed, to keep their models serving: {', '.join(rest)} "
                                          "(they run as before; fix the cause, then run the command again)",)
                        raise
            finally:
                self.finish(batch)
            if waited:
                self.wait_routed([name for name in batch if self.routed(name)])

    def wait_routed(self, names: list[str]) -> None:
        """Wait until the gateway would send `names` new requests again (it follows the watchdog, which
        may still call a program that just became ready `loading` for a tick or two): only then may the
        next replica of its model go."""
        since = self.clock()
        deadline = since + max(ROUTED_WAIT_S, 5 * self.stack.watchdog.interval_s)
        pending = list(names)
        while pending:
            now = self.clock()
            view = read_gateway(self.stack.gateway_state_path, now)
            pending = [name for name in pending if view is not None and view.backend(name) is not None
                       and not (view.updated_s >= since and view.backend(name).available)]
            if pending and now >= deadline:
                self.say(f"note: the gateway does not route to {', '.join(pending)} yet (`baremetal status` says "
                         "why); going on")
                return
            if pending:
                self.sleep(DRAIN_POLL_S)
        if names:
            self.say(f"{', '.join(names)} back in the gateway's routing")


def restart(changer: Changer, names: list[str], wait: Callable[[list[str]], None] | None, wait_last: bool) -> None:
    """`baremetal restart`: drain, stop and start `names`, replicas of one model one at a time."""

    def start_again(batch: list[str]) -> None:
        changer.starting(batch)
        for name in batch:
            changer.client.start(name, wait=False)
            changer.say(f"starting {name}")

    changer.roll(names, "restart", start_again, wait, wait_last)


def stop(changer: Changer, names: list[str]) -> None:
    """`baremetal stop` / `down PROGRAM`: drain `names`, then stop them (they stay stopped)."""
    try:
        changer.take_down(list(reversed(names)), "stop")
    finally:
        changer.finish(names)
