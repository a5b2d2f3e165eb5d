"""TextTable: a table drawn as plain lines of text, with a cursor row for the tables one selects from.

Textual's DataTable renders its cells through Rich again whenever one of them changes, and `top`'s tables
change every second (uptimes, rates, GPU readings); drawn as one Text each, a refresh is one render per
table (scripts/bench_top.py measures what `top` costs).
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

RED = {"FATAL", "BACKOFF", "EXITED", "STOPPED", "NOT LOADED", "NO", "stuck", "failed", "given_up",
       "hardware_fault", "restarting", "silent", "restart", "Xid"}
YELLOW = {"STARTING", "STOPPING", "loading", "?"}
GREEN = {"RUNNING", "yes", "ready", "reporting"}


def cell_style(value: str) -> str:
    """The colour a cell's first word stands for (a state, a verdict, a readiness)."""
    word = value.split(" ")[0].rstrip(",")
    return "bold red" if word in RED else "yellow" if word in YELLOW else "green" if word in GREEN else ""


class TextTable(Widget, can_focus=True):
    """Rows of cells under a header, columns as wide as their widest cell; with `cursor`, a selected row
    moved by the arrow keys (or a click) that posts Highlighted."""

    DEFAULT_CSS = """
    TextTable { height: auto; width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    TextTable:focus { background: $boost; }
    """
    BINDINGS = [Binding("up", "move(-1)", "Up", show=False), Binding("down", "move(1)", "Down", show=False),
                Binding("home", "move(-1000000)", show=False), Binding("end", "move(1000000)", show=False)]
    selected_row: reactive[int] = reactive(0, layout=False)

    class Highlighted(Message):
        """The cursor moved to the row with `key`."""

        def __init__(self, table: "TextTable", key: str):
            super().__init__()
            self.table, self.key = table, key

        @property
        def control(self) -> "TextTable":
            return self.table

    def __init__(self, headers: list[str], cursor: bool = False, coloured: tuple[str, ...] = (),
                 windowed: bool = False, id: str | None = None):
        super().__init__(id=id)
        self.headers = headers
        self.windowed = windowed            # a table of fixed height: show the rows around the cursor
        self._offset = 0
        self.coloured = {headers.index(name) for name in coloured}     # columns coloured by meaning
        self.cursor = cursor
        self.can_focus = cursor
        self.rows: dict[str, list[str]] = {}
        self._lines = Text()

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor; None in an empty table."""
        keys = list(self.rows)
        return keys[min(self.selected_row, len(keys) - 1)] if keys else None

    def show(self, rows: list[tuple[str, list[str]]]) -> None:
        """Show these rows (key, cells); the cursor stays on its row's key when that row is still there."""
        before = self.selected_key
        new = dict(rows)
        if new == self.rows:
            return
        grown = len(new) != len(self.rows)
        self.rows = new
        keys = list(new)
        if before in new:
            self.selected_row = keys.index(before)
        elif keys:
            self.selected_row = min(self.selected_row, len(keys) - 1)
        self._draw()
        self.refresh(layout=grown)
        if self.cursor and self.selected_key != before and self.selected_key is not None:
            self.post_message(self.Highlighted(self, self.selected_key))

    def move_to(self, key: str) -> None:
        """Put the cursor on the row with `key`."""
        keys = list(self.rows)
        if key in keys:
            self.action_move(keys.index(key) - self.selected_row)

    def action_move(self, step: int) -> None:
        if not self.rows:
            return
        row = max(0, min(len(self.rows) - 1, self.selected_row + step))
        if row != self.selected_row:
            self.selected_row = row
            self._draw()
            self.refresh()
            self.post_message(self.Highlighted(self, self.selected_key))

    def on_click(self, event: Click) -> None:
        row = self._offset + event.y - 1
        if self.cursor and event.y >= 1 and row < len(self.rows):
            self.focus()
            self.action_move(row - self.selected_row)

    def on_resize(self) -> None:
        self._draw()
        self.refresh()

    def on_focus(self) -> None:
        self._draw()
        self.refresh()

    def on_blur(self) -> None:
        self._draw()
        self.refresh()

    def _window(self, count: int) -> range:
        """The rows to draw: all, or in a windowed table those that fit, the cursor's among them."""
        visible = self.size.height - 1
        if not self.windowed or visible < 1 or count <= visible:
            self._offset = 0
            return range(count)
        if self.selected_row < self._offset:
            self._offset = self.selected_row
        elif self.selected_row >= self._offset + visible:
            self._offset = self.selected_row - visible + 1
        self._offset = max(0, min(self._offset, count - visible))
        return range(self._offset, self._offset + visible)

    def _draw(self) -> None:
        rows = list(self.rows.values())
        widths = [max([len(header)] + [len(row[index]) for row in rows if index < len(row)])
                  for index, header in enumerate(self.headers)]
        text = Text(no_wrap=True, overflow="ellipsis")     # one row a line: the cursor and clicks count lines
        text.append(" " + "  ".join(h.ljust(w) for h, w in zip(self.headers, widths)).rstrip(), style="bold")
        for position in self._window(len(rows)):
            cells = rows[position]
            line = Text(" ")
            for index, (value, width) in enumerate(zip(cells, widths)):
                line.append(value.ljust(width) if index < len(widths) - 1 else value,
                            style=cell_style(value) if index in self.coloured else "")
                if index < len(widths) - 1:
                    line.append("  ")
            if self.cursor and position == self.selected_row:
                line.stylize("reverse" if self.has_focus else "underline")
            text.append("\n")
            text.append(line)
        self._lines = text

    def render(self) -> Text:
        return self._lines
