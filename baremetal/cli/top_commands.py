"""top: the node live in the terminal (Textual), or one frame of it as text with --once."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from baremetal.cli.common import config_option, load, nvml_module

HELP = """The whole node, live: programs, models, GPUs, the watchdog's events and a log tail, with keys to act.

\b
PROGRAMS  state, ready and the watchdog's verdict, restarts, uptime, pid, port, GPUs and the GPU
          memory its processes hold
MODELS    from the gateway's metrics: requests/s and tokens/s (last 10 s), in flight, held (waiting
          for a replica), migrated and errors (per minute), time to first token p50 (last minute),
          a sparkline of tokens/s over 5 minutes; per key name when the keys have names
GPUS      utilisation (now and a 5-minute sparkline), memory, temperature, power, throttling, ECC
          errors, cordoned, and which program holds the memory
EVENTS    the watchdog's newest events; LOG: the end of the selected program's log

\b
Keys: arrows select a program (Tab: the events table)  r restart  s stop  u start  l follow its logs
      o its other log (stdout/stderr)  e the selected event's evidence  q quit (Ctrl-C: exit status 130)
Every action asks first (y/n), runs the same command as `baremetal restart|stop|start PROGRAM`
(the same drain of requests in flight, the same wait for readiness) and says what it did.

It reads, once a refresh, what `status` reads without probing anything: supervisord (one call), the
state files under <root>/run, the gateway's /metrics and NVML (else the watchdog's GPU readings). It
sends no request to any engine. Without a terminal use --once: one frame as text (readings taken
--interval apart, for the rates), exit status as `status`: 0 all running and ready, 1 not, 3
supervisord not running.
"""


def _interval_s(text: str) -> float:
    from baremetal.config.types import FieldError, duration_s

    try:
        value = duration_s(text)
    except FieldError as error:
        raise click.BadParameter(str(error), param_hint="--interval") from None
    if value < 0.1:
        raise click.BadParameter("at least 100ms", param_hint="--interval")
    return value


@click.command(help=HELP)
@click.option("--once", is_flag=True, help="Print one frame as text and exit (pipes, CI, scripts).")
@click.option("--interval", metavar="DURATION", default="1s", show_default=True,
              help="Time between refreshes (with --once: between the two readings the rates come from).")
@click.option("-p", "--program", metavar="PROGRAM", default=None,
              help="Start with this program selected (with --once: print the end of its log too).")
@config_option
def top(once: bool, interval: str, program: str | None, config_path: Path) -> None:
    from baremetal.cli.top.builder import FrameBuilder
    from baremetal.cli.top.sources import NodeReader
    from baremetal.plan.pipeline import known_specs

    interval_s = _interval_s(interval)
    stack = load(config_path)
    specs = known_specs(stack)
    if program is not None and program not in {spec.name for spec in specs}:
        from baremetal.errors import UsageError

        raise UsageError(f"no program named {program!r}; the programs are: {', '.join(s.name for s in specs)}")
    if not once and not (sys.stdout.isatty() and sys.stdin.isatty()):
        from baremetal.errors import UsageError

        raise UsageError("`baremetal top` needs a terminal; without one, `baremetal top --once` prints one frame "
                         "as text")
    reader = NodeReader(stack, nvml=nvml_module())
    builder = FrameBuilder(stack.stack.name, specs, stack.watchdog.interval_s, stack.api.kind == "gateway",
                           interval_s)
    if once:
        _once(reader, builder, program, interval_s)
        return
    from baremetal.cli.top.app import TopApp

    node = (click.get_current_context().find_root().obj or {}).get("node")
    app = TopApp(reader, builder, config_path, interval_s, node=node, program=program)
    app.run()
    if app.return_code:
        raise click.exceptions.Exit(app.return_code)


def _once(reader, builder, program: str | None, interval_s: float) -> None:
    from baremetal.cli.top.text import frame_text

    try:
        if program:
            reader.selected = (program, None)
        builder.build(reader.read())
        time.sleep(interval_s)
        frame = builder.build(reader.read())
    finally:
        reader.close()
    click.echo(frame_text(frame), nl=False)
    if frame.supervisord_error:
        raise click.exceptions.Exit(3)
    if frame.ready_count < len(frame.programs):
        raise click.exceptions.Exit(1)


COMMANDS = [top]
