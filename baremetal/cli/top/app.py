"""The Textual view of `baremetal top`: the frame drawn as tables, refreshed by a reader thread, and the
keys that act on the selected program or event. The only module that imports Textual at load time."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Log, Static

from baremetal.cli.top import cells
from baremetal.cli.top.actions import QUESTIONS, Action, ActionResult, run_action
from baremetal.cli.top.builder import FrameBuilder
from baremetal.cli.top.evidence import evidence_text
from baremetal.cli.top.frame import EventRow, Frame
from baremetal.cli.top.screens import Confirm, FollowLogs, TextPage, plain
from baremetal.cli.top.sources import NodeReader
from baremetal.cli.top.widgets import TextTable

MESSAGE_CELLS = 90


class FrameReady(Message):
    """A new frame from the reader thread."""

    def __init__(self, frame: Frame):
        super().__init__()
        self.frame = frame


class ActionDone(Message):
    """A command run for a key has ended."""

    def __init__(self, result: ActionResult):
        super().__init__()
        self.result = result


class TopApp(App):
    """Programs, models, keys, GPUs, events and a log tail, refreshed every `interval_s`."""

    TITLE = "baremetal top"
    CSS = """
    #headline { height: 1; background: $primary-background; }
    .title { height: 1; color: $accent; text-style: bold; }
    #programs { max-height: 18; }
    #models { max-height: 10; }
    #keys { max-height: 8; }
    #gpus { max-height: 10; }
    #bottom { height: 1fr; min-height: 8; }
    #events-box { width: 1fr; }
    #log-box { width: 1fr; }
    #events { height: 1fr; }
    #log { height: 1fr; }
    #message { height: 1; background: $boost; }
    #log-title { height: 1; }
    #gateway-note { height: auto; max-height: 3; }
    #no-gpu { height: auto; max-height: 3; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "interrupted", "Quit", show=False, priority=True),
        Binding("r", "act('restart')", "Restart"),
        Binding("s", "act('stop')", "Stop"),
        Binding("u", "act('start')", "Start"),
        Binding("l", "follow_logs", "Follow logs"),
        Binding("o", "switch_stream", "stdout/stderr"),
        Binding("e", "evidence", "Evidence"),
    ]

    def __init__(self, reader: NodeReader, builder: FrameBuilder, config_path: Path, interval_s: float = 1.0,
                 node: str | None = None, runner: Callable[..., ActionResult] = run_action,
                 program: str | None = None):
        super().__init__()
        self.reader, self.builder = reader, builder
        self.config_path, self.node, self.interval_s = config_path, node, interval_s
        self.runner = runner
        self.frame: Frame | None = None
        self.selected: str | None = program
        self._start_at = program
        self.stream: str | None = None            # None: the stream written last
        self.last_action: str = ""
        self._log_shown: tuple | None = None
        self._events: dict[str, EventRow] = {}
        self._lines: dict[str, str] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name="top-reader", daemon=True)

    def compose(self) -> ComposeResult:
        yield Static("baremetal top: reading ...", id="headline", markup=False)
        yield Static("PROGRAMS", classes="title")
        yield TextTable(cells.PROGRAM_HEADERS, cursor=True, coloured=("STATE", "READY", "WATCHDOG"), id="programs")
        yield Static("MODELS", classes="title")
        yield TextTable(cells.MODEL_HEADERS, id="models")
        yield Static("", id="gateway-note", markup=False)
        yield TextTable(cells.KEY_HEADERS, id="keys")
        yield Static("GPUS", classes="title")
        yield TextTable(cells.GPU_HEADERS, coloured=("CORDONED",), id="gpus")
        yield Static("", id="no-gpu", markup=False)
        with Horizontal(id="bottom"):
            with Vertical(id="events-box"):
                yield Static("EVENTS (e: evidence of the selected one)", classes="title")
                yield TextTable(cells.EVENT_HEADERS, cursor=True, coloured=("KIND",), windowed=True, id="events")
            with Vertical(id="log-box"):
                yield Static("LOG", id="log-title", classes="title", markup=False)
                yield Log(id="log", max_lines=1000)
        yield Static("", id="message", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._select(self.selected)
        self._thread.start()

    def on_unmount(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.reader.close()

    # -- the reader thread ---------------------------------------------------------------------
    def _read_loop(self) -> None:
        while not self._stop.is_set():
            frame = self.builder.build(self.reader.read())
            if self._stop.is_set():
                return
            self.post_message(FrameReady(frame))
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def _select(self, program: str | None) -> None:
        self.selected = program
        self.reader.selected = (program, self.stream) if program else None
        self._wake.set()

    # -- drawing -------------------------------------------------------------------------------
    def on_frame_ready(self, message: FrameReady) -> None:
        frame = self.frame = message.frame
        step = cells.per_char(frame.interval_s)
        self.line("#headline", cells.headline(frame))
        programs = self.query_one("#programs", TextTable)
        programs.show([(row.name, cells.program_cells(row)) for row in frame.programs])
        if self._start_at and self._start_at in programs.rows:
            programs.move_to(self._start_at)          # --program NAME: start there, once
            self._start_at = None
        elif self.selected is None and frame.programs:
            self._select(programs.selected_key)
        self.query_one("#models", TextTable).show([(row.name, cells.model_cells(row, step)) for row in frame.models])
        self.line("#gateway-note", frame.gateway_note or "", layout=True)
        self.query_one("#gateway-note", Static).display = bool(frame.gateway_note)
        keys = self.query_one("#keys", TextTable)
        keys.display = bool(frame.keys)
        keys.show([(f"{row.key}\0{row.model}", cells.key_cells(row)) for row in frame.keys])
        self._draw_gpus(frame, step)
        self._events = event_keys(frame)
        self.query_one("#events", TextTable).show([(key, _short(cells.event_cells(row)))
                                                   for key, row in self._events.items()])
        self._draw_log(frame)

    def line(self, selector: str, text: str, layout: bool = False) -> None:
        """Set a Static's text; only a change repaints it, and without a layout of the screen unless
        `layout` (the one-line ones have their height fixed by the CSS): that keeps a refresh cheap."""
        if self._lines.get(selector) != text:
            self._lines[selector] = text
            self.query_one(selector, Static).update(text, layout=layout)

    def _draw_gpus(self, frame: Frame, step: int) -> None:
        gpus, no_gpu = self.query_one("#gpus", TextTable), self.query_one("#no-gpu", Static)
        gpus.display, no_gpu.display = bool(frame.gpus), not frame.gpus
        if frame.gpus:
            gpus.show([(str(row.index), cells.gpu_cells(row, step)) for row in frame.gpus])
        else:
            self.line("#no-gpu", cells.no_gpu_line(frame), layout=True)

    def _draw_log(self, frame: Frame) -> None:
        tail = frame.log
        title = "LOG (select a program)"
        if tail is not None:
            other = "stdout" if tail.stream == "stderr" else "stderr"
            title = f"LOG {tail.program} {tail.stream} · o: {other} · l: follow · {tail.path}"
        self.line("#log-title", title)
        shown = (tail.program, tail.stream, tail.lines) if tail else None
        if shown != self._log_shown:
            log = self.query_one("#log", Log)
            log.clear()
            log.write_lines([plain(line) for line in (tail.lines if tail else ())])
            self._log_shown = shown

    def on_text_table_highlighted(self, event: TextTable.Highlighted) -> None:
        if event.table.id == "programs" and event.key != self.selected:
            self.stream = None
            self._select(event.key)

    # -- keys ----------------------------------------------------------------------------------
    def action_act(self, action: Action) -> None:
        program = self.selected
        if not program:
            self.say("select a program first (arrow keys in the programs table)")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.say(f"{action} {program}: running `baremetal {action} {program}` ...")
                self._run(action, program)
            else:
                self.say(f"{action} {program}: not done")

        self.push_screen(Confirm(QUESTIONS[action].format(program=program) + "\n\nDo it?"), answered)

    def _run(self, action: Action, program: str) -> None:
        # A thread of our own, not a Textual worker: quitting must not wait for a start that waits for a
        # slow model; the command itself runs on in its own session (see actions.run_action).
        def act() -> None:
            result = self.runner(action, program, self.config_path, self.node)
            if not self._stop.is_set():
                self.post_message(ActionDone(result))

        threading.Thread(target=act, name=f"top-{action}", daemon=True).start()

    def on_action_done(self, message: ActionDone) -> None:
        result = message.result
        self.say(result.summary())
        self.notify("\n".join(result.output[-5:]) or result.summary(), title=f"{result.action} {result.program}",
                    severity="information" if result.ok else "error", markup=False)
        self._wake.set()

    def action_interrupted(self) -> None:
        """Ctrl-C quits too, with the exit status of an interrupted command (130)."""
        self.exit(return_code=130)

    def say(self, text: str) -> None:
        """The message line: what the last action did."""
        self.last_action = text
        self.line("#message", text)

    def action_follow_logs(self) -> None:
        if self.selected:
            self.push_screen(FollowLogs(self.selected, self.reader.stack.logs_dir))

    def action_switch_stream(self) -> None:
        if self.frame is None or self.frame.log is None:
            return
        self.stream = "stdout" if self.frame.log.stream == "stderr" else "stderr"
        self._select(self.selected)

    def action_evidence(self) -> None:
        if self.frame is None:
            return
        event = self._events.get(self.query_one("#events", TextTable).selected_key or "")
        if event is None:
            self.say("no event selected (Tab to the events table, then the arrow keys)")
            return
        self.push_screen(TextPage(f"event: {event.kind} {event.program or ''}", evidence_text(event.event)))


def event_keys(frame: Frame) -> dict[str, EventRow]:
    """The events by a key that stays with the event while newer ones arrive (its time, kind, program)."""
    keyed: dict[str, EventRow] = {}
    for row in frame.events:
        key = f"{row.time_s:.3f} {row.kind} {row.program}"
        while key in keyed:
            key += "+"
        keyed[key] = row
    return keyed


def _short(values: list[str]) -> list[str]:
    return values[:-1] + [values[-1] if len(values[-1]) <= MESSAGE_CELLS else values[-1][:MESSAGE_CELLS - 1] + "…"]
