"""TextTable through Pilot: rows drawn as aligned text, the cursor moved by keys and clicks and kept on its
row while rows change, Highlighted posted, and a fixed-height table showing the rows around the cursor."""

from __future__ import annotations

import asyncio

from textual.app import App, ComposeResult

from baremetal.cli.top.widgets import TextTable, cell_style


class Harness(App):
    CSS = "#fixed { height: 4; }"

    def __init__(self):
        super().__init__()
        self.highlighted: list[str] = []

    def compose(self) -> ComposeResult:
        yield TextTable(["NAME", "STATE"], cursor=True, coloured=("STATE",), id="auto")
        yield TextTable(["N"], cursor=True, windowed=True, id="fixed")

    def on_text_table_highlighted(self, event: TextTable.Highlighted) -> None:
        self.highlighted.append(f"{event.table.id}:{event.key}")


def lines(table: TextTable) -> list[str]:
    return table.render().plain.splitlines()


def test_rows_cursor_and_window():
    app = Harness()

    async def drive() -> None:
        async with app.run_test(size=(60, 20)) as pilot:
            table = app.query_one("#auto", TextTable)
            table.show([("a", ["alpha", "RUNNING"]), ("b", ["b", "FATAL"])])
            await pilot.pause()
            assert lines(table) == [" NAME   STATE", " alpha  RUNNING", " b      FATAL"]
            assert table.selected_key == "a"
            await pilot.press("down")
            await pilot.pause()
            assert table.selected_key == "b" and app.highlighted[-1] == "auto:b"
            table.show([("new", ["new", "STARTING"]), ("a", ["alpha", "RUNNING"]), ("b", ["b", "FATAL"])])
            assert table.selected_key == "b"                     # the cursor stays with its row
            table.show([("a", ["alpha", "RUNNING"])])
            await pilot.pause()
            assert table.selected_key == "a" and app.highlighted[-1] == "auto:a"   # its row is gone
            await pilot.click("#auto", offset=(2, 1))
            assert table.selected_key == "a" and app.focused is table

            fixed = app.query_one("#fixed", TextTable)
            fixed.show([(str(n), [f"row {n}"]) for n in range(10)])
            await pilot.pause()
            assert lines(fixed) == [" N", " row 0", " row 1", " row 2"]       # height 4: header and 3 rows
            fixed.focus()
            for _ in range(5):
                await pilot.press("down")
            assert fixed.selected_key == "5" and lines(fixed) == [" N", " row 3", " row 4", " row 5"]
            await pilot.press("home")
            assert fixed.selected_key == "0" and lines(fixed)[1] == " row 0"

    asyncio.run(drive())


def test_cell_colours():
    assert cell_style("RUNNING") == "green" and cell_style("FATAL") == "bold red"
    assert cell_style("stuck (collective_spin)") == "bold red" and cell_style("STARTING") == "yellow"
    assert cell_style("ready, draining") == "green" and cell_style("12.5") == ""
