"""The Textual view through Pilot, with no supervisord (the real stack is in test_top_real.py): what it
shows from the state files and NVML (the recording fake), the evidence page of an event, the log pane and
its other stream, and that an action asks first, does nothing on "n" and says what it did on "y"."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from baremetal.cli.top.actions import ActionResult
from baremetal.cli.top.app import TopApp
from baremetal.cli.top.builder import FrameBuilder
from baremetal.cli.top.screens import Confirm, TextPage
from baremetal.cli.top.sources import NodeReader
from baremetal.config import load_stack
from baremetal.plan.pipeline import known_specs
from tests.support.fake_nvml import FakeGpu, FakeNvml
from tests.support.lifecycle import program_toml, stack_toml
from tests.support.pilot import table_rows, until


@pytest.fixture
def config(write_stack, short_tmp):
    path = write_stack(stack_toml("view", [program_toml("web", ["sleep", "1"])]))
    logs, evidence = short_tmp / "state" / "logs", short_tmp / "state" / "evidence" / "20261201-104200-web"
    logs.mkdir(parents=True)
    evidence.mkdir(parents=True)
    (evidence / "summary.json").write_text('{"hang_kind": "engine_stopped_scheduling"}\n')
    (evidence / "stacks.txt").write_text("Thread 1 (idle): MainThread\n")
    event = {"time_s": time.time() - 3, "kind": "restart", "program": "web", "message": "no progress for 3.0s",
             "log_tail": ["last words of web"], "evidence": str(evidence)}
    (logs / "events.jsonl").write_text(json.dumps(event) + "\n")
    (logs / "web.err.log").write_text("stderr line\n")
    (logs / "web.log").write_text("stdout line\n")
    return path


class Runner:
    """Stands in for running `baremetal ACTION PROGRAM` (the real command runs in test_top_real.py)."""

    def __init__(self):
        self.calls = []

    def __call__(self, action, program, config_path, node):
        self.calls.append((action, program, config_path, node))
        return ActionResult(action, program, 0, ("stopped web", "starting web", "1 program(s) running and ready"))


def test_the_view_without_supervisord(config):
    stack = load_stack(config)
    runner = Runner()
    nvml = FakeNvml([FakeGpu(name="NVIDIA H200", utilization_gpu=64, temperature_c=58)])
    app = TopApp(NodeReader(stack, nvml=nvml), FrameBuilder("view", known_specs(stack), 1.0, False), config,
                 interval_s=0.2, runner=runner)

    async def drive() -> None:
        async with app.run_test(size=(200, 50)) as pilot:
            await until(pilot, lambda: app.frame is not None and app.frame.log is not None, 10, "a frame")
            assert "supervisord: supervisord is not running" in str(app.query_one("#headline").render())
            assert table_rows(app, "#programs")["web"][:2] == ["web", "?"]
            gpu = table_rows(app, "#gpus")["0"]
            assert gpu[1:3] == ["NVIDIA H200", "64%"] and "58 C" in gpu
            assert not app.query_one("#no-gpu").display
            assert app.frame.log.program == "web"
            first = app.frame.log.stream
            await pilot.press("o")
            await until(pilot, lambda: app.frame.log.stream != first, 5, "the other stream")
            lines = {"stdout": ("stdout line",), "stderr": ("stderr line",)}
            assert app.frame.log.lines == lines[app.frame.log.stream]

            await pilot.press("r")
            assert isinstance(app.screen, Confirm)
            await pilot.press("n")
            assert runner.calls == [] and app.last_action == "restart web: not done"
            await pilot.press("r", "y")
            await until(pilot, lambda: app.last_action.startswith("restart web: done"), 10, "the result")
            assert runner.calls == [("restart", "web", config, None)]
            assert app.last_action == "restart web: done: 1 program(s) running and ready"

            await pilot.press("tab")
            assert app.focused.id == "events"
            await pilot.press("e")
            assert isinstance(app.screen, TextPage)
            page = "\n".join(app.screen.text.splitlines())
            assert "no progress for 3.0s" in page and "last words of web" in page
            assert "--- summary.json" in page and "engine_stopped_scheduling" in page and "MainThread" in page
            await pilot.press("escape")
            await pilot.press("ctrl+c")

    asyncio.run(drive())
    assert app.return_code == 130                 # Ctrl-C: interrupted, as for logs -f (q exits 0: test_top_real)
