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
