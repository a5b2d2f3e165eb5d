"""Reading the watchdog's verdicts: format, staleness, and re-reading only when the file changes."""

from __future__ import annotations

import json
import os

import pytest

from baremetal.gateway.health import Verdict, VerdictReader, unhealthy_programs

NOW = 1_000_000.0
CASES = {
    "fresh, one unhealthy": ({"updated_s": NOW - 1, "programs": {"a": {"phase": "stuck", "healthy": False},
                                                                  "b": {"phase": "ready", "healthy": True}}},
                             {"a": Verdict("stuck")}),
    "loading counts as unhealthy when it says so": ({"updated_s": NOW, "programs": {"a": {"phase": "loading",
                                                                                           "healthy": False}}},
                                                    {"a": Verdict("loading")}),
    "stale: ignored": ({"updated_s": NOW - 31, "programs": {"a": {"phase": "stuck", "healthy": False}}}, {}),
    "no timestamp: ignored": ({"programs": {"a": {"healthy": False}}}, {}),
    "healthy missing: not skipped": ({"updated_s": NOW, "programs": {"a": {"phase": "stuck"}}}, {}),
    "ready but failing probes": ({"updated_s": NOW, "programs": {"a": {"phase": "ready", "healthy": False}}},
                                 {"a": Verdict("ready")}),
    "garbage": (["not", "a", "dict"], {}),
    "programs not a dict": ({"updated_s": NOW, "programs": []}, {}),
}


@pytest.mark.parametrize("document, expected", CASES.values(), ids=CASES.keys())
def test_unhealthy_programs(document, expected):
    assert unhealthy_programs(document, NOW, stale_after_s=30.0) == expected


def test_only_ready_programs_are_a_last_resort():
    assert [phase for phase in ("loading", "ready", "stuck", "restarting", "failed", "given_up", "hardware_fault")
            if Verdict(phase).last_resort] == ["ready"]
    assert Verdict("stuck").reason == "watchdog says stuck"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def write(path, document, mtime_ns):
    path.write_text(json.dumps(document))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_view_rereads_on_mtime_change_only(short_tmp):
    path = short_tmp / "watchdog.json"
    clock = Clock()
    view = VerdictReader(path, stale_after_s=30.0, check_interval_s=0.25, clock=clock, wall_clock=lambda: NOW)
    assert view.unhealthy() == {}                                   # missing file: no verdicts
    write(path, {"updated_s": NOW, "programs": {"a": {"phase": "stuck", "healthy": False}}}, 1_000)
    assert view.unhealthy() == {}                                   # within the check interval: cached
    clock.now = 0.3
    assert view.unhealthy() == {"a": Verdict("stuck")}
    path.write_text("{ not json")                                   # same mtime as before: not read again
    os.utime(path, ns=(1_000, 1_000))
    clock.now = 0.6
    assert view.unhealthy() == {"a": Verdict("stuck")}
    write(path, {"updated_s": NOW, "programs": {"a": {"phase": "ready", "healthy": True}}}, 2_000)
    clock.now = 0.9
    assert view.unhealthy() == {}
    path.unlink()
    clock.now = 1.2
    assert view.unhealthy() == {}


def test_drains_are_read_from_drain_json_and_skipped_like_unhealthy_programs(short_tmp):
    from baremetal.gateway.health import DrainReader, RoutingVerdicts
    from baremetal.gateway.routing import Backend, order_backends

    clock = Clock()
    watchdog_file, drain_file = short_tmp / "watchdog.json", short_tmp / "drain.json"
    verdicts = RoutingVerdicts(VerdictReader(watchdog_file, clock=clock, wall_clock=lambda: NOW),
                               DrainReader(drain_file, clock=clock, wall_clock=lambda: NOW))
    assert verdicts.unhealthy() == {}                               # no files: nothing kept from routing
    write(watchdog_file, {"updated_s": NOW, "programs": {"a": {"phase": "ready", "healthy": False}}}, 1_000)
    write(drain_file, {"programs": {"b": {"since_s": NOW - 1, "until_s": NOW + 29, "reason": "update"}}}, 1_000)
    clock.now = 0.3
    found = verdicts.unhealthy()
    assert found == {"a": Verdict("ready"), "b": Verdict("draining", "draining before a planned change (baremetal up)")}
    a, b = (Backend("chat", "vllm", f"http://127.0.0.1:{port}", name) for name, port in (("a", 1), ("b", 2)))
    order, skipped = order_backends((a, b), {}, found, 0.0)
    assert order == [a] and skipped == ["b: draining before a planned change (baremetal up)"]
    write(drain_file, {"programs": {}}, 2_000)                      # back in routing
    clock.now = 0.6
    assert verdicts.unhealthy() == {"a": Verdict("ready")}
