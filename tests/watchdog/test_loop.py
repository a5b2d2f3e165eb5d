"""The loop itself, with supervisord's XML-RPC proxy as a recording fake (the seam supervisor.py offers)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from baremetal.config.load import parse_stack
from baremetal.host.nvml import GpuMonitor
from baremetal.stack.http_client import LiteClient
from baremetal.supervisord.client import SupervisorClient
from baremetal.watchdog.events import EventLog, read_events
from baremetal.watchdog.loop import WatchdogLoop
from baremetal.watchdog.state_file import read_state
from tests.support.waiting import wait_for


class BrokenSupervisor:
    """Answers getState, and fails getAllProcessInfo with an error no one planned for."""

    def __init__(self):
        self.calls = []
        self.supervisor = SimpleNamespace(getAllProcessInfo=self._processes, getState=lambda: {"statecode": 1})

    def _processes(self):
        self.calls.append("getAllProcessInfo")
        raise RuntimeError("boom")


def test_an_unexpected_error_in_a_tick_is_reported_and_watching_goes_on(tmp_path):
    stack = parse_stack('[stack]\nname = "x"\n[api]\nkind = "none"\n[watchdog]\ninterval = "50ms"\n',
                        tmp_path / "baremetal.toml")
    proxy = BrokenSupervisor()
    events = EventLog(tmp_path / "events.jsonl")
    watchdog = WatchdogLoop(stack.watchdog, [], lambda: SupervisorClient(tmp_path / "s.sock", proxy=proxy), LiteClient(),
                        GpuMonitor(), events, tmp_path / "watchdog.json")
    thread = threading.Thread(target=watchdog.run)
    thread.start()
    wait_for(lambda: len(proxy.calls) >= 3, 10, what="three ticks")
    watchdog.stop()
    thread.join(10)
    kinds = [event["kind"] for event in read_events(tmp_path / "events.jsonl")]
    assert kinds[0] == "watchdog_started" and kinds[-1] == "watchdog_stopped"
    errors = [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "watchdog_error"]
    assert len(errors) >= 3 and errors[0]["message"] == "RuntimeError: boom"
    assert "RuntimeError: boom" in errors[0]["traceback"][-1]
    assert read_state(tmp_path / "watchdog.json") is None      # nothing half-known was written
