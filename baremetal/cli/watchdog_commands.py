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
    from baremetal.watchdog.service import serve

    serve(load(config_path))


@click.command()
@click.option("-n", "--lines", "count", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the newest events to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they happen (Ctrl-C stops).")
@click.option("-p", "--program", default=None, help="Only events about this program.")
@click.option("--show", "show", metavar="N|FOLDER", default=None,
              help="Print an evidence folder: N counts back from the newest (1 = the last restart's), or the "
                   "folder's name as the restart event gives it.")
@config_option
@json_option
def events(count: int, follow: bool, program: str | None, show: str | None, config_path: Path,
           as_json: bool) -> None:
    """What the watchdog saw and did: phases, restarts (with evidence), GPU warnings.

    Read from <root>/logs/events.jsonl (and its rotated files). Each line: time, program, kind, message;
    a restart names its evidence folder. Kinds: loading, ready, stuck, restart (why, with the hang's
    kind; the log tail, GPU readings, probe history in --json), restarted (how the stop went: signals,
    leftovers killed, GPU memory freed, how long the evidence took), failed, given_up, hardware_fault,
    stopped, cordon (a GPU taken out of use), gpu, canary, supervisor, watchdog_started/stopped.

    \b
    Evidence: every restart and stop of a stuck program keeps a folder under <root>/evidence/
    (the newest watchdog.evidence_keep): the Python stacks of each of its processes (py-spy), NVML
    details of its GPUs, its /metrics, its log tail, the probe history, NCCL flight recorder dumps.
    `--show 1` prints the newest; `-p PROGRAM --show 1` the newest of one program.

    --json prints one JSON object per event on stdout (none for an empty log) and nothing but JSON on
    stderr either: with no events there, one object {"events": 0, "path", "message"}.
    """
    from baremetal.watchdog.events import events_path, format_event, read_events
    from baremetal.watchdog.events import follow as follow_events

    stack = load(config_path)
    if show is not None:
        from baremetal.watchdog.evidence_view import show_evidence

        click.echo(show_evidence(stack.root, show, program, as_json), nl=False)
        return
    path = events_path(stack.root)
    wanted = [e for e in read_events(path) if program is None or e.get("program") == program][-count:]
    if not wanted and not follow:
        # With --json nothing but JSON is printed: stdout holds the events (none), stderr this notice.
        notice = f"No watchdog events yet in {path}." if not path.exists() else "No matching events."
        click.echo(_event_text({"events": 0, "path": str(path), "message": notice}, True, format_event)
                   if as_json else notice, err=True)
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
@config_option
@json_option
def gpus(config_path: Path, as_json: bool) -> None:
    """GPU health through NVML: temperature, memory, utilisation, power, throttling, ECC, processes.

    Needs no stack file; with one (-c, $BAREMETAL_CONFIG or ./baremetal.toml) it also marks the GPUs the
    stack's watchdog cordoned. Each reading is a value or '-' where the GPU does not report it. On a
    host without an NVIDIA driver it says so and exits 1.
    """
    from baremetal.cli.status_view import GPU_HEADERS, cordon_lines, gpu_row
    from baremetal.host.nvml import GpuMonitor
    from baremetal.host.processes import program_of

    cordoned = _cordons(config_path)
    monitor = GpuMonitor(nvml=nvml_module())
    available = monitor.start()
    try:
        samples = monitor.sample()
        owners = {p.pid: program_of(p.pid) for s in samples for p in s.processes or ()}
        if as_json:
            print_json({"nvml": monitor.reason, "driver_version": monitor.driver_version,
                        "xid_events_supported": list(monitor.xid_gpus),
                        "gpus": [dict(s.to_json(), programs={str(p.pid): owners.get(p.pid) for p in s.processes or ()},
                                      cordoned=cordoned.get(s.index)) for s in samples]})
        elif available:
            click.echo(f"NVIDIA driver {monitor.driver_version or '?'}; {len(samples)} GPU(s)")
            click.echo(table([gpu_row(s.to_json(), owners, cordoned) for s in samples], GPU_HEADERS))
            for line in cordon_lines(cordoned):
                click.echo(line)
        else:
            click.echo(f"No GPUs to show: {monitor.reason}.", err=True)
    finally:
        monitor.close()
    if not available:
        raise click.exceptions.Exit(1)


def _cordons(config_path: Path) -> dict[int, dict]:
    """The stack's cordoned GPUs, when there is a stack file to find them by; {} otherwise."""
    from baremetal.host.cordon import cordon_path, read_cordons

    if not config_path.exists():
        return {}
    stack = load(config_path)
    return {gpu: entry.to_json() for gpu, entry in read_cordons(cordon_path(stack.run_dir)).items()}


@click.command()
@click.argument("gpu_indices", metavar="GPU...", nargs=-1, required=True, type=click.IntRange(min=0))
@click.option("--apply/--no-apply", default=True, show_default=True,
              help="Render and apply the stack at once (as `up --no-wait`), so the programs pinned to the GPU "
                   "move back onto it and those left stopped for want of a spare start.")
@config_option
def uncordon(gpu_indices: tuple[int, ...], apply: bool, config_path: Path) -> None:
    """Let the stack use a cordoned GPU again.

    The watchdog cordons a GPU (<root>/run/cordon.json) after a fatal Xid, uncorrectable ECC errors,
    failed row remapping, or memory that stayed held after every process of the stack was gone; no
    program is started on it until this command. Fix the GPU first (reset it, reboot, service), check
    it with `baremetal gpus`, then `baremetal uncordon GPU`. GPU is the index nvidia-smi shows.
    """
    from baremetal.errors import UsageError
    from baremetal.host.cordon import cordon_path, read_cordons
    from baremetal.host.cordon import uncordon as remove

    stack = load(config_path)
    path = cordon_path(stack.run_dir)
    cordoned = read_cordons(path)
    unknown = [gpu for gpu in gpu_indices if gpu not in cordoned]
    if unknown:
        raise UsageError(f"GPU {', '.join(map(str, unknown))} is not cordoned in stack {stack.stack.name!r}; "
                         f"cordoned: {', '.join(map(str, sorted(cordoned))) or 'none'}")
    for entry in remove(path, list(gpu_indices)):
        click.echo(f"GPU {entry.gpu} uncordoned (cordoned by {entry.by}: {entry.reason})")
    from baremetal.stack.lifecycle import up
    from baremetal.supervisord.client import SupervisorClient

    if apply and SupervisorClient(stack.socket_path).is_running():
        from baremetal.stack.readiness import ProgressLines

        up(stack, click.echo, ProgressLines(click.echo, is_tty=False), wait=False, timeout_s=stack.watchdog.load_timeout_s)
    else:
        click.echo("Programs pinned to it use it again from the next `baremetal up`.")


COMMANDS = [watchdog, events, gpus, uncordon]
