"""Which backend serves a request: the route table (model name -> backends) and replica balancing.

Replicas are [[model]] entries sharing a `name`. A request goes to the replica with the fewest requests
in flight (ties: the one picked least recently, so sequential requests rotate). Replicas the watchdog
reports unhealthy are skipped (those it still calls ready, only failing probes, are tried last); one
that refused a connection is tried after the others for a back-off period (1 s, doubling to 30 s) and
in line again once it answers. The ordering is a pure function, table-tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

from baremetal.config.model import FASTCHAT_ENGINES, Stack
from baremetal.gateway.health import Verdict

BackendKind = Literal["vllm", "fastchat", "program"]
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class Backend:
    """One server that serves one model name."""

    model: str                      # served name: what clients send as "model"
    kind: BackendKind
    url: str                        # base URL, no trailing slash
    name: str                       # supervisord program name (the worker address when found via the controller)
    task: str = "chat"
    model_dir: Path | None = None   # local model folder (FastChat: its chat template)
    worker_template: bool = False   # FastChat worker started with --conv-template: use the worker's template


def routes_from_stack(stack: Stack) -> dict[str, tuple[Backend, ...]]:
    """Every model of the stack with its backends, in stack order."""
    routes: dict[str, list[Backend]] = {}
    for model in stack.models:
        kind = "fastchat" if model.engine in FASTCHAT_ENGINES else "vllm"
        model_dir = model.path if isinstance(model.path, Path) else None
        routes.setdefault(model.name, []).append(Backend(
            model.name, kind, model.url, model.program, model.task, model_dir,
            worker_template="--conv-template" in model.args))
    for program in stack.programs:
        if program.serves:
            serves = program.serves
            routes.setdefault(serves.model, []).append(
                Backend(serves.model, "program", serves.url.rstrip("/"), program.name, serves.task))
    return {name: tuple(backends) for name, backends in routes.items()}


@dataclass
class BackendState:
    """What the gateway has seen of one backend (mutable, owned by the Balancer)."""

    in_flight: int = 0
    picked_seq: int = 0             # when it was last picked (a counter), for rotation among ties
    down_until_s: float = 0.0       # monotonic time until which it is tried last
    failures: int = 0               # consecutive refused connections
    last_error: str = ""


def order_backends(backends: tuple[Backend, ...], states: Mapping[str, BackendState],
                   unhealthy: Mapping[str, Verdict], now_s: float) -> tuple[list[Backend], list[str]]:
    """(backends to try, in order; why the others are skipped). Pure.

    Order: usable ones (fewest in flight, then least recently picked), those backing off after a refused
    connection (soonest back first), then those the watchdog doubts but still calls ready."""
    usable, backing_off, doubted, skipped = [], [], [], []
    for backend in backends:
        verdict = unhealthy.get(backend.name)
        if verdict is not None and not verdict.last_resort:
            skipped.append(f"{backend.name}: {verdict.reason}")
            continue
        state = states.get(backend.name) or BackendState()
        group = doubted if verdict is not None else backing_off if state.down_until_s > now_s else usable
        group.append((backend, state))
    usable.sort(key=lambda pair: (pair[1].in_flight, pair[1].picked_seq))
    backing_off.sort(key=lambda pair: pair[1].down_until_s)
    doubted.sort(key=lambda pair: (pair[1].down_until_s, pair[1].in_flight))
    return [backend for backend, _ in usable + backing_off + doubted], skipped


@dataclass
class Balancer:
    """Counts in-flight requests and connection failures per backend (one event loop: no locks)."""

    states: dict[str, BackendState] = field(default_factory=dict)
    _seq: int = 0

    def state(self, backend: Backend) -> BackendState:
        return self.states.setdefault(backend.name, BackendState())

    def plan(self, backends: tuple[Backend, ...], unhealthy: Mapping[str, Verdict],
             now_s: float) -> tuple[list[Backend], list[str]]:
        return order_backends(backends, self.states, unhealthy, now_s)

    def started(self, backend: Backend) -> None:
        state = self.state(backend)
        self._seq += 1
        state.in_flight += 1
        state.picked_seq = self._seq

    def finished(self, backend: Backend) -> None:
        self.state(backend).in_flight -= 1

    def refused(self, backend: Backend, now_s: float, error: str) -> None:
        """The backend did not take the connection: try it last for a while."""
        state = self.state(backend)
        state.failures += 1
        state.down_until_s = now_s + min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (state.failures - 1))
        state.last_error = error

    def answered(self, backend: Backend) -> None:
        state = self.state(backend)
        if state.failures:
            state.failures, state.down_until_s, state.last_error = 0, 0.0, ""


class ResponseOwners:
    """Which backend made a Response (GET /v1/responses/{id} and its cancel carry no model): the newest
    `size` ids the gateway saw pass, oldest forgotten first."""

    def __init__(self, size: int = 10000):
        self.size = size
        self.owners: dict[str, Backend] = {}

    def remember(self, response_id: str, backend: Backend) -> None:
        self.owners.pop(response_id, None)
        self.owners[response_id] = backend
        if len(self.owners) > self.size:
            del self.owners[next(iter(self.owners))]

    def owner(self, response_id: str) -> Backend | None:
        return self.owners.get(response_id)
