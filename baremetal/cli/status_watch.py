"""`status --watch`: the status again and again, as `watch baremetal status` would show it, without a
full-screen view. On a terminal each run is drawn in place (drawn whole at once, so it never flickers
half-written); in a pipe or a log the runs follow one another, each after a line with its time."""

from __future__ import annotations

import contextlib
import io
import sys
import time
from typing import Callable

import click

CLEAR = "\x1b[H\x1b[2J"


def watch(run_once: Callable[[], int], interval_s: float, as_json: bool) -> None:
    """Print what `run_once` prints every `interval_s` until Ctrl-C."""
    terminal = sys.stdout.isatty() and not as_json
    while True:
        started = time.monotonic()
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = run_once()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if as_json:
            text = buffer.getvalue()
        else:
            head = f"every {interval_s:g}s: baremetal status ({'ok' if code == 0 else f'exit {code}'})  {stamp}"
            text = (CLEAR if terminal else "") + head + ("  Ctrl-C stops\n\n" if terminal else "\n") + \
                buffer.getvalue() + ("" if terminal else "\n")
        click.echo(text, nl=False)
        sys.stdout.flush()
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
