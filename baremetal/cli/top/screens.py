"""`top`'s screens over the main view: the question every action asks first, a page of text (an event's
evidence), and one program's logs followed live (stdout and stderr, through rotation)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Log, Static

from baremetal.supervisord.line_times import merged, tail_dated
from baremetal.supervisord.log_follow import LogFollower, LogSource

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
FOLLOW_BACKLOG_LINES = 200
FOLLOW_POLL_S = 0.25


def plain(line: str) -> str:
    """A log line without terminal colour codes (the view draws text, not escape sequences)."""
    return ANSI.sub("", line)


class Confirm(ModalScreen[bool]):
    """A yes/no question; dismissed with True only for `y`."""

    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Vertical { width: 80; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    """
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No"),
                Binding("escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question", markup=False)
            yield Static("y: yes    n or Escape: no", id="keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TextPage(Screen):
    """A page of text to read and scroll (an event's evidence); Escape or q goes back."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("q", "app.pop_screen", "Back")]

    def __init__(self, title: str, text: str):
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        yield Static(self.title_text, id="page-title", markup=False)
        yield Log(id="page", auto_scroll=False)
        yield Footer()

    def on_mount(self) -> None:
        page = self.query_one("#page", Log)
        page.write_lines([plain(line) for line in self.text.splitlines()])
        page.scroll_home(animate=False)


class FollowLogs(Screen):
    """One program's stdout and stderr, the last lines and then what is appended; Escape or q goes back."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("q", "app.pop_screen", "Back")]

    def __init__(self, program: str, logs_dir: Path):
        super().__init__()
        self.program = program
        self.sources = [LogSource(program, "stdout", logs_dir / f"{program}.log"),
                        LogSource(program, "stderr", logs_dir / f"{program}.err.log")]
        self.follower: LogFollower | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"{self.program}: stdout and stderr, followed ({', '.join(str(s.path) for s in self.sources)})",
                     id="follow-title", markup=False)
        yield Log(id="follow", max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        self.follower = LogFollower(self.sources)
        now_s = time.time()
        backlog = [tail_dated(source.path, FOLLOW_BACKLOG_LINES, None, now_s) for source in self.sources]
        log = self.query_one("#follow", Log)
        log.write_lines([self._line(self.sources[index].stream, line.text) for index, line in merged(*backlog)])
        self.set_interval(FOLLOW_POLL_S, self._poll)

    def _poll(self) -> None:
        if self.follower is None:
            return
        found = self.follower.poll()
        if found:
            self.query_one("#follow", Log).write_lines([self._line(source.stream, text) for source, text in found])

    @staticmethod
    def _line(stream: str, text: bytes) -> str:
        return f"{'err' if stream == 'stderr' else 'out'} | {plain(text.decode('utf-8', errors='replace'))}"

    def on_unmount(self) -> None:
        if self.follower is not None:
            self.follower.close()
            self.follower = None
