"""logs: one program's log, or every program's at once with a coloured name before each line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from baremetal.cli.common import config_option, load

# The colours of `docker compose logs`: readable on dark and light terminals, red left for errors.
COLOURS = ("cyan", "yellow", "green", "magenta", "blue", "bright_cyan", "bright_yellow", "bright_green",
           "bright_magenta", "bright_blue")
ONE_PROGRAM_LINES = 50
EACH_LOG_LINES = 10

HELP = """Print the end of a program's log file, or of every program's, and with -f follow them.

\b
  baremetal logs vllm-chat --stderr -f    one program (or a model's served name, or `supervisord`)
  baremetal logs -f                       every program, stdout and stderr, as `docker compose logs -f`
  baremetal logs --since 10m              every program's lines of the last ten minutes, oldest first

Reads <root>/logs/PROGRAM.log and PROGRAM.err.log directly, so it works whether or not supervisord
runs, and -f follows each file through supervisord's rotation (renamed to .1, a new file opened).
With no PROGRAM each line starts with its program's name, in a colour of its own on a terminal; the
lines already there are printed oldest first across the programs. vLLM and most Python servers log to
stderr.

--since dates lines by the timestamps the programs write (Python logging, supervisord, FastChat, vLLM,
ISO 8601), in the stack's timezone when it sets one; a line without one belongs to the line before it.
A log with no timestamps at all shows its last -n lines if it was written to in that time.
Ctrl-C stops following (exit status 130).
"""


@click.command(help=HELP)
@click.argument("program", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing what is appended, across log rotation.")
@click.option("-n", "--lines", "count", type=click.IntRange(min=0), default=None,
              help=f"How many of the last lines to print first: of the program's log (default "
                   f"{ONE_PROGRAM_LINES}), or of each log with no PROGRAM (default {EACH_LOG_LINES}).")
@click.option("--since", metavar="DURATION", default=None,
              help="Only lines written in the last DURATION, e.g. 90s, 10m, 2h.")
@click.option("--stderr", is_flag=True, help="The stderr log (PROGRAM.err.log), where most Python servers, "
              "vLLM included, write their logging. With no PROGRAM: only the stderr logs.")
@click.option("--stdout", "stdout_only", is_flag=True, help="With no PROGRAM: only the stdout logs.")
@click.option("--color/--no-color", "colour", default=None,
              help="Colour the program names (default: on a terminal, unless NO_COLOR is set).")
@config_option
def logs(program: str | None, follow: bool, count: int | None, since: str | None, stderr: bool,
         stdout_only: bool, colour: bool | None, config_path: Path) -> None:
    stack = load(config_path)
    since_s = _since_s(since)
    if program is None:
        streams = tuple(s for s, only in (("stdout", stdout_only), ("stderr", stderr)) if only) or ("stdout", "stderr")
        _all_logs(stack, streams, follow, EACH_LOG_LINES if count is None else count, since_s, count is not None,
                  _use_colour(colour))
        return
    _one_log(stack, program, follow, ONE_PROGRAM_LINES if count is None else count, since_s,
             count is not None, stderr)


def _since_s(text: str | None) -> float | None:
    """The epoch time --since points at; None without it."""
    if text is None:
        return None
    import time

    from baremetal.config.types import FieldError, duration_s

    try:
        return time.time() - duration_s(text)
    except FieldError as error:
        raise click.BadParameter(str(error), param_hint="--since") from None


def _use_colour(choice: bool | None) -> bool:
    if choice is not None:
        return choice
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _zone(stack):
    """The time zone the programs write their timestamps in: the stack's `timezone`, else this host's."""
    if not stack.stack.timezone:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(stack.stack.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _one_log(stack, program: str, follow: bool, count: int, since_s: float | None, counted: bool,
             stderr: bool) -> None:
    from baremetal.supervisord.logtail import FileFollower, last_lines

    path = _log_path(stack, program, stderr)
    out = sys.stdout.buffer
    if not path.exists() and not follow:
        click.echo(f"{path} does not exist yet (the program has not started since its logs were cleared)", err=True)
        return
    follower = FileFollower(path) if follow else None
    if since_s is None:
        lines = last_lines(path, count)
    else:
        lines = [line.text for line in _since(path, since_s, stack, count)]
        if counted:
            lines = lines[-count:] if count else []
    for line in lines:
        out.write(line + b"\n")
    out.flush()
    if not stderr and path.exists() and path.stat().st_size == 0 and count:
        click.echo(f"({path.name} is empty; the program may log to stderr: add --stderr)", err=True)
    if follower is None:
        return
    import time

    try:
        while True:
            data = follower.read()
            if data:
                out.write(data)
                out.flush()
            else:
                time.sleep(0.2)
    finally:
        follower.close()


def _since(path: Path, since_s: float, stack, undated_count: int):
    import time

    from baremetal.supervisord.line_times import lines_since

    return lines_since(path, since_s, _zone(stack), time.time(), undated_count)[0]


def _all_logs(stack, streams: tuple[str, ...], follow: bool, count: int, since_s: float | None, counted: bool,
              colour: bool) -> None:
    import time

    from baremetal.plan.pipeline import known_specs
    from baremetal.supervisord.line_times import merged, tail_dated
    from baremetal.supervisord.log_follow import LogFollower, program_logs

    names = [spec.name for spec in known_specs(stack)]
    sources = program_logs(stack.logs_dir, names, streams)
    prefixes = _prefixes(names, colour)
    follower = LogFollower(sources) if follow else None
    zone, now_s = _zone(stack), time.time()
    if since_s is None:
        backlog = [tail_dated(source.path, count, zone, now_s) for source in sources]
    else:
        backlog = [_since(source.path, since_s, stack, count) for source in sources]
        if counted:
            backlog = [lines[-count:] if count else [] for lines in backlog]
    out = sys.stdout.buffer
    for index, line in merged(*backlog):
        out.write(prefixes[sources[index].program] + line.text + b"\n")
    out.flush()
    if not any(source.path.exists() for source in sources):
        click.echo(f"No log files yet in {stack.logs_dir} (the stack has not run since they were cleared)"
                   + ("; waiting for them" if follow else ""), err=True)
    if follower is None:
        return
    try:
        for source, text in follower.lines(lambda: False):
            out.write(prefixes[source.program] + text + b"\n")
            out.flush()
    finally:
        follower.close()


def _prefixes(names: list[str], colour: bool) -> dict[str, bytes]:
    """`name | ` for each program, padded to the longest name, each in its own colour."""
    width = max((len(name) for name in names), default=0)
    prefixes = {}
    for index, name in enumerate(names):
        text = f"{name:<{width}} | "
        if colour:
            text = click.style(text, fg=COLOURS[index % len(COLOURS)])
        prefixes[name] = text.encode()
    return prefixes


def _log_path(stack, program: str, stderr: bool) -> Path:
    from baremetal.plan.pipeline import known_specs
    from baremetal.stack.lifecycle import resolve_programs

    if program == "supervisord":
        return stack.logs_dir / "supervisord.log"
    suffix = ".err.log" if stderr else ".log"
    if (stack.logs_dir / f"{program}{suffix}").exists():
        return stack.logs_dir / f"{program}{suffix}"      # also programs removed from the stack since
    specs = known_specs(stack)
    models: dict[str, list[str]] = {}
    for spec in specs:
        if spec.model:
            models.setdefault(spec.model, []).append(spec.name)
    from baremetal.errors import UsageError

    names = resolve_programs([program], [spec.name for spec in specs] + ["supervisord"], models)
    if len(names) > 1:
        raise UsageError(f"model {program!r} is served by {', '.join(names)}: name one of these programs")
    return stack.logs_dir / f"{names[0]}{suffix}"


COMMANDS = [logs]
