"""`baremetal top` on a real stack: [[program]] upstreams under real supervisord, the real gateway in front
of them and the real watchdog. Textual's Pilot drives the view and its keys (a restart from the view
really restarts the program, a stop asks first and stops it, a start brings it back; the evidence of an
event, a program's logs followed); then `baremetal top` runs in tmux, as an operator runs it, and its
screen is read back with capture-pane."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import openai
import pytest

from baremetal.cli.top.app import TopApp
from baremetal.cli.top.builder import FrameBuilder
from baremetal.cli.top.screens import Confirm, FollowLogs, TextPage
from baremetal.cli.top.sources import NodeReader
from baremetal.config import load_stack
from baremetal.host.nvml import GpuMonitor
from baremetal.plan.pipeline import known_specs
from tests.support.fake_nvml import FakeGpu, FakeNvml
from tests.support.lifecycle import force_down, run
from tests.support.pilot import select, table_rows, until
from tests.support.upstream_stack import upstream_stack_toml
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]   # real supervisord and servers, the real gateway and watchdog

KEY = "top-test-key-0123456789"
TEAM_KEY = "top-team-key-9876543210"          # a named key: its own rows in the keys table
PROGRAMS = ("up-a", "up-b", "idle", "api", "watchdog")


@pytest.fixture(scope="module")
def stack_file():
    root = Path(tempfile.mkdtemp(prefix="bm-top-", dir="/tmp"))
    path = root / "baremetal.toml"
    path.write_text(upstream_stack_toml("toptest", KEY, [("up-a", "chat"), ("up-b", "chat")])
                    + f'\n[[api.key]]\nname = "team-a"\nkey = "{TEAM_KEY}"\n')
    result = run("up", "--timeout", "60s", "-c", str(path))
    try:
        assert result.exit_code == 0, result.output
        yield path
    finally:
        run("down", "-c", str(path))
        force_down(root / "state")
        shutil.rmtree(root, ignore_errors=True)


def make_app(stack_file: Path) -> TopApp:
    stack = load_stack(stack_file)
    nvml = FakeNvml([FakeGpu(name="NVIDIA H200", utilization_gpu=42)])          # the CLI's NVML seam
    reader = NodeReader(stack, nvml=nvml)
    builder = FrameBuilder(stack.stack.name, known_specs(stack), stack.watchdog.interval_s, True, 1.0)
    return TopApp(reader, builder, stack_file, interval_s=1.0)


def pid_of(stack_file: Path, program: str) -> int | None:
    rows = {row["name"]: row for row in json.loads(run("status", "--json", "-c", str(stack_file)).stdout)["programs"]}
    return rows[program]["pid"]


def test_the_view_shows_the_node_and_its_keys_act(stack_file):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{load_stack(stack_file).api.port}/v1", api_key=TEAM_KEY,
                           max_retries=0, timeout=30)

    def ask() -> None:
        for _ in range(6):
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
            list(client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}],
                                                stream=True))

    before = pid_of(stack_file, "up-a")

    async def drive() -> None:
        app = make_app(stack_file)
        results, runner = [], app.runner
        app.runner = lambda *args: results.append(runner(*args)) or results[-1]
        async with app.run_test(size=(200, 60)) as pilot:
            programs = await until(pilot, lambda: (rows := table_rows(app, "#programs")) and
                                   all(rows.get(name, ["", ""])[1] == "RUNNING" for name in PROGRAMS) and rows,
                                   30, "every program RUNNING")
            assert programs["up-a"][2] == "yes" and programs["up-a"][3] == "ready"     # the watchdog's verdict
            models = await until(pilot, lambda: table_rows(app, "#models").get("chat"), 10, "the chat model")
            assert models[1] == "2/2 ready"
            await asyncio.to_thread(ask)             # while the view runs: rates come from its readings
            chat = await until(pilot, lambda: (row := table_rows(app, "#models").get("chat")) and row[2] != "-"
                               and float(row[2]) > 0 and row[6] != "-" and row[7] != "-" and row, 15,
                               "requests/s, TTFT and tokens/s of chat")
            assert chat[3] == "0"                                                       # nothing in flight now
            assert float(chat[7]) > 0 and chat[9].strip()               # tokens/s from the usage, and its sparkline
            team = await until(pilot, lambda: table_rows(app, "#keys").get("team-a\0chat"), 10, "team-a's row")
            assert team[:2] == ["team-a", "chat"] and float(team[2]) > 0 and float(team[3]) > 0
            gpu = table_rows(app, "#gpus")["0"]
            assert gpu[1] == "NVIDIA H200" and gpu[2] == "42%"

            await select(pilot, app, "up-a")
            await until(pilot, lambda: app.frame and app.frame.log and app.frame.log.program == "up-a", 5,
                        "up-a's log tail")
            await pilot.press("r")
            assert isinstance(app.screen, Confirm) and "Restart up-a?" in app.screen.question
            await pilot.press("y")
            await until(pilot, lambda: app.last_action.startswith("restart up-a: done"), 60, "the restart's result")
            assert "up-a back in the gateway's routing" in app.last_action    # its last words: routed again
            after = pid_of(stack_file, "up-a")
            assert after and after != before                                          # really restarted
            said = "\n".join(results[-1].output)        # drained first: out of the gateway's routing, then back
            assert "draining up-a before its restart" in said and "drained up-a in" in said, said
            assert "running and ready" in said, said

            await select(pilot, app, "idle")
            await pilot.press("s")
            await pilot.press("n")
            assert app.last_action == "stop idle: not done" and pid_of(stack_file, "idle")
            await pilot.press("s", "y")
            await until(pilot, lambda: table_rows(app, "#programs")["idle"][1] == "STOPPED", 30, "idle STOPPED")
            assert app.last_action.startswith("stop idle: done")
            await pilot.press("u", "y")
            await until(pilot, lambda: table_rows(app, "#programs")["idle"][1] == "RUNNING"
                        and app.last_action.startswith("start idle: done"), 30, "idle RUNNING again")

            await pilot.press("l")
            assert isinstance(app.screen, FollowLogs) and app.screen.program == "idle"
            await pilot.press("escape")
            for _ in range(5):                                 # Tab to the events table
                if app.focused is not None and app.focused.id == "events":
                    break
                await pilot.press("tab")
            await until(pilot, lambda: table_rows(app, "#events"), 10, "events")
            await pilot.press("e")
            assert isinstance(app.screen, TextPage) and "event:" in app.screen.title_text
            await pilot.press("escape")
            await pilot.press("q")

    asyncio.run(drive())


def test_top_in_a_terminal(stack_file, tmp_path):
    assert shutil.which("tmux"), "scripts/test installs tmux for this test"
    socket, session = f"bm-top-{os.getpid()}", "top"
    exit_file = tmp_path / "exit-status"
    command = f"{sys.executable} -m baremetal top -c {stack_file}; echo $? > {exit_file}"
    tmux = ["tmux", "-L", socket]
    subprocess.run(tmux + ["new-session", "-d", "-s", session, "-x", "200", "-y", "50", command], check=True,
                   env=dict(os.environ, TERM="xterm-256color"))
    monitor = GpuMonitor()
    gpus_here = monitor.start(xid_events=False)      # what this host has: a GPU table, or the "no GPU" line
    monitor.close()
    try:
        def screen() -> str:
            return subprocess.run(tmux + ["capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

        def complete() -> str | None:
            text = screen()
            rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
            running = all(rows.get(name, ["", ""])[1] == "RUNNING" for name in PROGRAMS)
            gpu_panel = "GPU  NAME" in text if gpus_here else "no GPU: NVML not available" in text
            return text if running and gpu_panel else None

        text = wait_for(complete, 30, interval_s=0.3, what="every program RUNNING and the GPU panel on the screen")
        assert "stack 'toptest'" in text and "5/5 running and ready" in text
        subprocess.run(tmux + ["send-keys", "-t", session, "q"], check=True)
        assert wait_for(lambda: exit_file.exists() and exit_file.read_text().strip(), 10, what="top exits") == "0"
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
