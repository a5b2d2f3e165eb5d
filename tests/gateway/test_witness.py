"""The gateway's witness: per backend, requests in flight and when bytes of theirs arrived; when it writes
gateway.json, and what the file says (read back with the CLI's and the watchdog's reader)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from baremetal.gateway.routing import Backend
from baremetal.gateway.witness import Witness, received
from baremetal.stack.gateway_view import BackendView, gateway_view

NOW = 1_800_000_000.0
A = Backend("chat", "vllm", "http://127.0.0.1:1", "vllm-a")
B = Backend("chat", "vllm", "http://127.0.0.1:2", "vllm-b")


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def witness(clock, draining=None, routable=("vllm-a", "vllm-b"), drained=None) -> Witness:
    return Witness(Path("/nonexistent/gateway.json"), {"chat": (A, B)},
                   lambda: draining or {}, lambda: routable,
                   on_drained=lambda model, backend: (drained if drained is not None else []).append((model, backend)),
                   clock=clock)


def read(w: Witness, now: float) -> dict[str, BackendView]:
    return dict(gateway_view(json.loads(w.snapshot(now)), now).backends)


def test_requests_in_flight_their_bytes_and_the_longest_wait():
    clock = Clock()
    w = witness(clock)
    w.refresh_routing()
    assert read(w, NOW) == {"vllm-a": BackendView("chat"), "vllm-b": BackendView("chat")}
    first = w.opened(A)
    clock.now += 1.0
    second = w.opened(A)
    received()                     # bytes for the attempt this task serves: the second one
    clock.now += 2.5
    a = read(w, clock.now)["vllm-a"]
    assert (a.in_flight, a.busy_since_s, a.last_request_s, a.last_byte_s) == (2, NOW, NOW + 1, NOW + 1)
    assert a.oldest_wait_s == 3.5                          # the first has had no byte since it was sent
    second.close()
    received()                     # the first one is the current attempt again
    clock.now += 0.5
    a = read(w, clock.now)["vllm-a"]
    assert (a.in_flight, a.last_byte_s, a.oldest_wait_s) == (1, NOW + 3.5, 0.5)
    first.close()
    clock.now += 1
    received()                     # outside an attempt: nothing to note
    a = read(w, clock.now)["vllm-a"]
    assert (a.in_flight, a.busy_since_s, a.last_byte_s, a.oldest_wait_s) == (0, None, NOW + 3.5, 0.0)


def test_bytes_noted_in_another_task_count_for_the_attempt_that_started_it():
    clock = Clock()
    w = witness(clock)

    async def note() -> None:
        received()

    async def attempt():
        ticket = w.opened(B)
        clock.now += 1
        await asyncio.ensure_future(note())       # a task made inside the attempt (FastChat's n > 1)
        ticket.close()

    asyncio.run(attempt())
    assert read(w, clock.now)["vllm-b"].last_byte_s == NOW + 1


def test_draining_and_routable_backends_and_the_requests_that_finish_draining():
    clock = Clock()
    drained: list = []
    draining: dict = {}
    w = witness(clock, draining, routable=("vllm-b",), drained=drained)
    ticket = w.opened(A)
    w.refresh_routing()
    assert read(w, NOW)["vllm-a"] == BackendView("chat", 1, NOW, None, NOW, 0.0, False, False)
    w.snapshot(NOW)
    draining["vllm-a"] = object()
    w.refresh_routing()
    assert w.dirty and read(w, NOW)["vllm-a"].draining
    ticket.close()
    assert drained == [("chat", "vllm-a")]
    w.opened(B).close()
    assert drained == [("chat", "vllm-a")]


def test_held_requests_per_model():
    w = witness(Clock())
    w.hold_started("chat")
    w.hold_started("chat")
    w.hold_ended("chat")
    assert json.loads(w.snapshot(NOW))["models"] == {"chat": {"held": 1}}


def test_when_it_writes():
    clock = Clock()
    w = witness(clock)
    assert w.due(NOW)                                       # never written
    w.snapshot(NOW)
    assert not w.due(NOW + 4.9) and w.due(NOW + 5.0)        # idle: every 5 s
    ticket = w.opened(A)
    assert not w.due(NOW + 0.2) and w.due(NOW + 0.25)       # a change: within 0.25 s
    w.snapshot(NOW + 0.25)
    assert not w.due(NOW + 1.2) and w.due(NOW + 1.25)       # in flight: every second
    ticket.close()
    w.snapshot(NOW + 2)
    w.hold_started("chat")
    w.snapshot(NOW + 2.5)
    assert w.due(NOW + 3.5)                                 # held: every second too


def test_run_writes_the_file_and_close_removes_it(short_tmp):
    path = short_tmp / "run" / "gateway.json"
    w = Witness(path, {"chat": (A,)}, lambda: {})

    async def serve_a_while():
        task = asyncio.ensure_future(w.run(tick_s=0.01))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if path.exists():
                break
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(serve_a_while())
    document = json.loads(path.read_text())
    assert document["pid"] == os.getpid() and set(document["backends"]) == {"vllm-a"}
    assert (path.stat().st_mode & 0o777) == 0o640
    w.close()
    assert not path.exists()


def test_a_reload_adds_new_backends_and_drops_unrouted_ones_once_idle():
    clock = Clock()
    w = witness(clock)
    C = Backend("code", "vllm", "http://127.0.0.1:3", "vllm-c")
    busy = w.opened(B)
    w.follow({"chat": (A,), "code": (C,)}, lambda: {"vllm-a": "drain"})
    assert set(read(w, NOW)) == {"vllm-a", "vllm-b", "vllm-c"}        # vllm-b still has a request in flight
    assert w.draining() == {"vllm-a": "drain"} and w.document(NOW)["models"]["code"] == {"held": 0}
    busy.close()
    w.follow({"chat": (A,), "code": (C,)}, lambda: {})
    assert set(read(w, NOW)) == {"vllm-a", "vllm-c"}


def test_several_workers_publish_one_file_with_their_sum(short_tmp):
    """api.workers > 1: each worker writes its own document, worker 0 writes gateway.json as their sum,
    which the watchdog's and the CLI's reader read like one gateway's."""
    path, folder = short_tmp / "run" / "gateway.json", short_tmp / "run" / "gateway-workers"
    folder.mkdir(parents=True)
    first = Witness(path, {"chat": (A, B)}, lambda: {}, lambda: ("vllm-a",), shared=(0, folder))
    second = Witness(path, {"chat": (A, B)}, lambda: {}, lambda: ("vllm-b",), shared=(1, folder))
    first.opened(A)
    for _ in range(2):
        second.opened(A)
    second.opened(B)
    second.hold_started("chat")

    async def serve_a_while():
        tasks = [asyncio.ensure_future(w.run(tick_s=0.01)) for w in (second, first)]

        def summed() -> bool:
            view = gateway_view(json.loads(path.read_text()), NOW) if path.exists() else None
            return view is not None and view.backends["vllm-a"].in_flight == 3

        for _ in range(300):
            await asyncio.sleep(0.01)
            if summed():
                break
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    first.clock = second.clock = lambda: NOW
    asyncio.run(serve_a_while())
    view = gateway_view(json.loads(path.read_text()), NOW)
    assert (view.backends["vllm-a"].in_flight, view.backends["vllm-b"].in_flight) == (3, 1)
    assert view.backends["vllm-a"].available and view.backends["vllm-b"].available   # each worker's word counts
    assert view.held == {"chat": 1}
    assert sorted(p.name for p in folder.iterdir()) == ["witness-0.json", "witness-1.json"]
    second.close()
    first.close()
    assert not path.exists() and not list(folder.iterdir())


def test_a_dead_workers_document_counts_for_nothing():
    from baremetal.gateway.witness import merged

    live = {"updated_s": NOW, "backends": {"vllm-a": {"in_flight": 1, "last_byte_s": NOW - 1}}, "models": {}}
    dead = {"updated_s": NOW - 60, "backends": {"vllm-a": {"in_flight": 5, "last_byte_s": NOW - 59}}, "models": {}}
    document = merged([live, dead], NOW)
    assert document["backends"]["vllm-a"]["in_flight"] == 1 and document["updated_s"] == NOW
