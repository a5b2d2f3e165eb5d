"""watchdog, events, gpus: the hang-and-health watcher, what it did, and what the GPUs say."""

from __future__ import annotations

from pathlib import Path

import click

from baremetal.cli.common import config_option, json_option, load, nvml_module, print_json, table


@click.command()
@config_option
def watchdog(config_path: Path) -> None:
    """Watch the stack's programs; restart those that hang, not only those that die.

    supervisord runs this as the `watchdog` program (rendered when [watchdog] enabled = true). Every
    interval it probes each program, reads progress (vLLM counters, a 1-token canary request when
    an engine looks idle) and GPU health through NVML, restarts stuck programs within a budget, and
    writes <root>/run/watchdog.json, <root>/logs/events.jsonl and Prometheus metrics. Stop it with
    `supervisorctl stop watchdog` to pause all automatic restarts.
    """
    from baremetal.watchdog.loop import serve

    serve(load(config_path))


@click.command()
@click.option("-n", "--lines", "count", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the newest events to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they happen (Ctrl-C stops).")
@click.option("-p", "--program", default=None, help="Only events about this program.")
@config_option
@json_option
def events(count: int, follow: bool, program: str | None, config_path: Path, as_json: bool) -> None:
    """What the watchdog saw and did: phases, restarts (with evidence), GPU warnings.

    Read from <root>/logs/events.jsonl (and its rotated files). Each line: time, program, kind, message.
    Kinds: loading, ready, stuck, restart (the evidence: log tail, GPU readings, probe history, in
    --json), restarted (how the stop went: signals, leftovers killed, GPU memory freed), failed,
    given_up, hardware_fault, stopped, gpu, canary, supervisor, watchdog_started/stopped.
    """
    from baremetal.watchdog.events import events_path, format_event, read_events
    from baremetal.watchdog.events import follow as follow_events

    stack = load(config_path)
    path = events_path(stack.root)
    wanted = [e for e in read_events(path) if program is None or e.get("program") == program][-count:]
    if not wanted and not follow:
        click.echo(f"No watchdog events yet in {path}." if not path.exists() else "No matching events.", err=True)
    for event in wanted:
        click.echo(_event_text(event, as_json, format_event))
    if follow:
        for event in follow_events(path):
            if program is None or event.get("program") == program:
                click.echo(_event_text(event, as_json, format_event))


def _event_text(event: dict, as_json: bool, format_event) -> str:
    import json

    return json.dumps(event, default=str) if as_json else format_event(event)


@click.command()
@json_option
def gpus(as_json: bool) -> None:
    """GPU health through NVML: temperature, memory, utilisation, power, throttling, ECC, processes.

    Needs no stack file. Each reading is a value or '-' where the GPU does not report it. On a host
    without an NVIDIA driver it says so and exits 1.
    """
    from baremetal.cli.status_view import GPU_HEADERS, gpu_row
    from baremetal.host.nvml import GpuMonitor
    from baremetal.host.processes import program_of

    monitor = GpuMonitor(nvml=nvml_module())
    available = monitor.start()
    try:
        samples = monitor.sample()
        owners = {p.pid: program_of(p.pid) for s in samples for p in s.processes or ()}
        if as_json:
            print_json({"nvml": monitor.reason, "driver_version": monitor.driver_version,
                        "xid_events_supported": list(monitor.xid_gpus),
                        "gpus": [dict(s.to_json(), programs={str(p.pid): owners.get(p.pid) for p in s.processes or ()})
                                 for s in samples]})
        elif available:
            click.echo(f"NVIDIA driver {monitor.driver_version or '?'}; {len(samples)} GPU(s)")
            click.echo(table([gpu_row(s.to_json(), owners) for s in samples], GPU_HEADERS))
        else:
            click.echo(f"No GPUs to show: {monitor.reason}.", err=True)
    finally:
        monitor.close()
    if not available:
        raise click.exceptions.Exit(1)


COMMANDS = [watchdog, events, gpus]
