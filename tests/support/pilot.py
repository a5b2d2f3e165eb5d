"""Driving `baremetal top`'s Textual view in tests: what a table shows, polling the running view with a
deadline, and selecting a program with the arrow keys as a user does."""

from __future__ import annotations

import time

from baremetal.cli.top.app import TopApp


def table_rows(app: TopApp, selector: str) -> dict[str, list[str]]:
    """What a table shows: row key -> its cells as text."""
    return dict(app.query_one(selector).rows)


async def until(pilot, predicate, timeout_s: float, what: str):
    """Poll the running view with a deadline (the reader thread refreshes it once a second)."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} not seen within {timeout_s}s"
        await pilot.pause(0.1)
    return value


async def select(pilot, app: TopApp, program: str) -> None:
    """Move the programs table's cursor to `program` with the arrow keys, as a user does."""
    order = list(table_rows(app, "#programs"))
    for _ in range(2 * len(order)):
        if app.selected == program:
            return
        await pilot.press("down" if order.index(program) > order.index(app.selected) else "up")
    raise AssertionError(f"{program} not selected: {app.selected} is")
