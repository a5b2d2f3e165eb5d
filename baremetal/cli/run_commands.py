"""up, down, start, stop, restart, status, ctl: run the stack under its supervisord.

Exit status: 0 success; 1 failure (a program failed or is not ready; for `status`: something is not
running and ready); 2 bad usage (unknown program, bad stack file); 3 supervisord is not running.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from baremetal.cli.common import config_option, json_option, load, nvml_module, print_json

TIMEOUT_HELP = ("How long to wait for readiness, e.g. 90s, 20m, or a bare number of seconds (90); at least 1s "
                "(default: the stack's watchdog.load_timeout).")
TIMEOUT_FLOOR_S = 1.0
PROBE_TIMEOUT_FLOOR_S = 0.01
WATCH_INTERVAL_FLOOR_S = 0.1
DRAIN_HELP = ("How long a program that is about to stop may finish the requests it has in flight, while the "
              "gateway sends it no new ones, e.g. 30s or a bare number of seconds; 0s stops it at once "
              "(default: the stack's api.drain_timeout).")


def _timeout_s(text: str | None, stack) -> float:
    if text is None:
        return stack.watchdog.load_timeout_s
    return _duration(text, "--timeout", TIMEOUT_FLOOR_S)


def _duration(text: str, flag: str, floor_s: float) -> float:
    """A duration flag in seconds: units or a bare number of seconds, at least `floor_s`; exit 2 otherwise."""
    from baremetal.config.types import FieldError, duration_at_least

    try:
        return duration_at_least(floor_s)(text)
    except FieldError as error:
        raise click.BadParameter(str(error), param_hint=flag) from None


def _drain_timeout_s(text: str | None, stack) -> float:
    if text is None:
        return stack.api.drain_timeout_s
    return _duration(text, "--drain-timeout", 0.0)


def _drain_option(function):
    return click.option("--drain-timeout", metavar="DURATION", default=None, help=DRAIN_HELP)(function)


def _progress():
    from baremetal.stack.readiness import ProgressLines

    def write(text: str) -> None:
        click.echo(text, nl=False)

    return ProgressLines(write, is_tty=sys.stdout.isatty())


def _client(stack, timeout_s: float = 10.0):
    """The stack's supervisord, once it is sure the root is this stack's (not another stack file's)."""
    from baremetal.plan.owner import check_root
    from baremetal.supervisord.client import SupervisorClient

    check_root(stack)

    return SupervisorClient(stack.socket_path, timeout_s=timeout_s)


def _targets(stack, client, names: tuple[str, ...]) -> tuple[list[str], dict]:
    """(program names, spec by name) for what the operator typed; supervisord must be running."""
    from baremetal.plan.pipeline import known_specs
    from baremetal.stack.lifecycle import require_running, resolve_programs

    require_running(client, stack)
    specs = known_specs(stack)
    programs = [spec.name for spec in specs]
    programs += sorted(info.name for info in client.processes() if info.name not in programs)
    models: dict[str, list[str]] = {}
    for spec in specs:
        if spec.model:
            models.setdefault(spec.model, []).append(spec.name)
    return resolve_programs(names, programs, models), {spec.name: spec for spec in specs}


@click.command()
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until every program runs and answers its readiness probe.")
@click.option("--timeout", metavar="DURATION", default=None, help=TIMEOUT_HELP)
@_drain_option
@config_option
def up(wait: bool, timeout: str | None, drain_timeout: str | None, config_path: Path) -> None:
    """Render the stack, start its supervisord if needed, apply changes, wait until everything serves.

    Only programs whose files changed restart; added ones start, removed ones stop, ones that were
    stopped or gave up start again. Running it again with nothing changed restarts nothing. A program
    the gateway routes to is drained before it stops (no new requests; those in flight finish), and
    replicas of one model restart one at a time, the next only once the previous one serves again
    (also with --no-wait, which then returns once the last one is started); when one does not come
    back, the others keep running as they were. Readiness means RUNNING in supervisord and a real
    request answered: a 1-token completion (or an embedding, a rerank) for vLLM, the worker status
    for FastChat, /v1/models for the API, the `health` URL of a [[program]]. On failure it names the
    program, its state and the last lines of its logs, and exits 1.
    """
    from baremetal.plan.owner import check_root
    from baremetal.stack.lifecycle import up as bring_up

    stack = load(config_path)
    check_root(stack)        # before the stack's lock is taken: nothing of another stack's root is touched
    timeout_s = _timeout_s(timeout, stack)
    bring_up(stack, say=click.echo, progress=_progress(), wait=wait, timeout_s=timeout_s,
             drain_timeout_s=_drain_timeout_s(drain_timeout, stack))


@click.command()
@click.argument("programs", nargs=-1)
@_drain_option
@config_option
def down(programs: tuple[str, ...], drain_timeout: str | None, config_path: Path) -> None:
    """Stop programs, or with none: every program and supervisord itself.

    supervisord stops programs in reverse start order (the API before the workers), each with its whole
    process group (vLLM's engine core and tensor-parallel ranks). Afterwards baremetal checks by pid that
    no process of the stack is left, and ends any that outlived its program. PROGRAM may be a program
    name or a model's served name; a program the gateway routes to is drained first (no new requests,
    those in flight finish; --drain-timeout).
    """
    from baremetal.stack.lifecycle import shutdown
    from baremetal.supervisord import daemon

    stack = load(config_path)
    client = _client(stack)
    if programs:
        _stop(stack, client, programs, _drain_timeout_s(drain_timeout, stack))
        return
    from baremetal.plan.pipeline import known_specs

    with daemon.stack_lock(stack, click.echo):
        shutdown(stack, client, known_specs(stack), click.echo)
    click.echo(f"stack {stack.stack.name!r} is down")


def _stop(stack, client, names: tuple[str, ...], drain_timeout_s: float) -> None:
    from baremetal.stack import changes
    from baremetal.supervisord import daemon

    targets, specs = _targets(stack, client, names)
    with daemon.stack_lock(stack, click.echo):
        changes.stop(changes.Changer(stack, client, specs, click.echo, drain_timeout_s), targets)


def _start(stack, client, names: tuple[str, ...], wait: bool, timeout: str | None, restart: bool,
           drain_timeout_s: float = 0.0) -> None:
    import time

    from baremetal.errors import BaremetalError
    from baremetal.plan.spec import ProgramSpec
    from baremetal.stack import changes
    from baremetal.stack.lifecycle import wait_ready
    from baremetal.supervisord import daemon

    targets, specs = _targets(stack, client, names)
    deadline_s = time.monotonic() + _timeout_s(timeout, stack)
    blocked = [f"{name}: {specs[name].blocked}" for name in targets if name in specs and specs[name].blocked]
    if blocked:
        raise BaremetalError("not started, its GPUs are cordoned: " + "; ".join(blocked))
    progress = _progress()

    def wait_for(batch: list[str]) -> None:
        from baremetal.config.api_keys import probe_key
        from baremetal.stack.http_client import LiteClient

        waited = [specs.get(name) or ProgramSpec(name=name, role="program", argv=(), environment={}, priority=0)
                  for name in batch]
        key = probe_key(stack.api) if any(s.probe and s.probe.kind == "openai" for s in waited) else None
        result = wait_ready(stack, client, waited, max(1.0, deadline_s - time.monotonic()), progress, LiteClient(), key)
        click.echo(f"{len(batch)} program(s) running and ready ({result.elapsed_s:.1f}s)")

    if restart:
        with daemon.stack_lock(stack, click.echo):
            changer = changes.Changer(stack, client, specs, click.echo, drain_timeout_s)
            changes.restart(changer, targets, wait_for, wait_last=wait)
        return
    for name in targets:
        client.start(name, wait=False)
        click.echo(f"starting {name}")
    if wait:
        wait_for(targets)


def _program_options(function):
    function = click.option("--timeout", metavar="DURATION", default=None, help=TIMEOUT_HELP)(function)
    function = click.option("--wait/--no-wait", default=True, show_default=True,
                            help="Wait until the programs run and answer their readiness probe.")(function)
    return click.argument("programs", nargs=-1, required=True)(function)


@click.command()
@_program_options
@config_option
def start(programs: tuple[str, ...], wait: bool, timeout: str | None, config_path: Path) -> None:
    """Start programs (by program name, or a model's served name, e.g. gpt-4 for vllm-gpt-4).

    Waits until they run and answer their readiness probe, unless --no-wait. Exits 2 for an unknown
    name (listing the programs), 3 when supervisord is not running (`baremetal up` starts it).
    """
    stack = load(config_path)
    _start(stack, _client(stack), programs, wait, timeout, restart=False)


@click.command()
@click.argument("programs", nargs=-1, required=True)
@_drain_option
@config_option
def stop(programs: tuple[str, ...], drain_timeout: str | None, config_path: Path) -> None:
    """Stop programs (by program name, or a model's served name) with their whole process group.

    A program the gateway routes to is drained first: the gateway sends it no new requests (they go to
    its other replicas, or wait for it) and those in flight finish, for at most --drain-timeout. They
    stay stopped until `baremetal start` or `baremetal up`. Exits 2 for an unknown name, 3 when
    supervisord is not running.
    """
    stack = load(config_path)
    _stop(stack, _client(stack), programs, _drain_timeout_s(drain_timeout, stack))


@click.command()
@_program_options
@_drain_option
@config_option
def restart(programs: tuple[str, ...], wait: bool, timeout: str | None, drain_timeout: str | None,
            config_path: Path) -> None:
    """Stop and start programs (by program name, or a model's served name), then wait until they serve.

    Each is drained first (the gateway sends it no new requests; those in flight finish, for at most
    --drain-timeout), and the replicas of one model go one at a time: the next only once the previous
    one serves again (also with --no-wait), so the model keeps answering. An operator's restart does
    not count against the watchdog's restart budget. Exits 2 for an unknown name (listing the
    programs), 3 when supervisord is not running, 1 when a program fails to come back (with its state
    and the last lines of its logs; the replicas not yet restarted are left running).
    """
    stack = load(config_path)
    _start(stack, _client(stack), programs, wait, timeout, restart=True,
           drain_timeout_s=_drain_timeout_s(drain_timeout, stack))


@click.command()
@click.option("--probe-timeout", metavar="DURATION", default="500ms", show_default=True,
              help="How long each readiness probe may take (a duration, or a bare number of seconds).")
@click.option("-w", "--watch", is_flag=True, help="Run again every --interval until Ctrl-C (exit status 130): "
              "redrawn in place on a terminal, one after the other otherwise (with --json: one object a line).")
@click.option("--interval", metavar="DURATION", default="2s", show_default=True, help="With --watch: how often.")
@json_option
@config_option
def status(probe_timeout: str, watch: bool, interval: str, as_json: bool, config_path: Path) -> None:
    """One line per program: state, pid, uptime, readiness, restarts, GPUs, port.

    READY comes from a quick probe of each running program (all at once, short timeout); RESTARTS counts
    spawns since supervisord started (from its log); the watchdog's view is shown while its report
    is fresh. Exit status: 0 every program running and ready, 1 some are not, 3 supervisord is not
    running. --watch is `watch baremetal status` for terminals where `baremetal top` is not wanted.
    """
    probe_timeout_s = _duration(probe_timeout, "--probe-timeout", PROBE_TIMEOUT_FLOOR_S)
    interval_s = _duration(interval, "--interval", WATCH_INTERVAL_FLOOR_S)
    stack = load(config_path)
    if watch:
        from baremetal.cli.status_watch import watch as watch_status

        watch_status(lambda: _status_once(stack, probe_timeout_s, as_json, watching=True), interval_s, as_json)
    code = _status_once(stack, probe_timeout_s, as_json)
    if code:
        click.get_current_context().exit(code)


def _status_once(stack, probe_timeout_s: float, as_json: bool, watching: bool = False) -> int:
    """Print the status once; its exit status. While watching, a supervisord that is not running is a
    line of the output (it may come up), and JSON is one line."""
    import time

    from baremetal.cli.status_view import format_table, to_json
    from baremetal.config.api_keys import probe_key
    from baremetal.errors import BaremetalError, NotRunningError
    from baremetal.plan.pipeline import known_specs
    from baremetal.stack.http_client import LiteClient
    from baremetal.stack.status import collect

    show_json = _one_line_json if watching else print_json
    client = _client(stack, timeout_s=5.0)
    try:
        api_key = probe_key(stack.api)
    except BaremetalError:
        api_key = None      # the probe then reports 401, which says what is wrong
    try:
        result = collect(stack, known_specs(stack), client, LiteClient(), time.time(), probe_timeout_s, api_key,
                         sample_gpus=_gpus_now)
    except NotRunningError:
        from baremetal.supervisord.daemon import check

        state = check(stack, client)
        if as_json:
            show_json({"stack": stack.stack.name, "supervisord": {"running": False, "state": state.state.value,
                                                                    "pid": state.pid}, "programs": []})
            return 3
        if watching:
            click.echo(state.describe(stack))
            return 3
        raise NotRunningError(state.describe(stack)) from None
    cluster = _cluster_status(stack, probe_timeout_s)
    if as_json:
        show_json(to_json(result) | ({"cluster": cluster[1]} if cluster else {}))
    else:
        click.echo(format_table(result))
        if cluster:
            click.echo("\n" + cluster[0])
        elif stack.cluster:
            click.echo(f"\nnode {stack.cluster.local!r} of a cluster: `baremetal status` on the head "
                       f"({stack.cluster.head.name}) shows every node")
    return 1 if not result.healthy or (cluster and not cluster[2]) else 0


def _one_line_json(value) -> None:
    import json

    click.echo(json.dumps(value, default=str, separators=(",", ":")))


def _gpus_now() -> list[dict]:
    """One NVML reading of every GPU (for `status` when no watchdog reports them); [] without NVML."""
    from baremetal.host.nvml import GpuMonitor

    monitor = GpuMonitor(nvml=nvml_module())
    try:
        return [sample.to_json() for sample in monitor.sample()] if monitor.start(xid_events=False) else []
    finally:
        monitor.close()


def _cluster_status(stack, probe_timeout_s: float) -> tuple[str, dict, bool] | None:
    """(table, JSON, healthy) of every node, on the head of a cluster; None elsewhere."""
    if stack.cluster is None or not stack.is_head:
        return None
    from baremetal.cli.cluster_view import format_cluster
    from baremetal.cluster.view import cluster_json, collect_cluster
    from baremetal.stack.http_client import LiteClient

    view = collect_cluster(stack, LiteClient(), probe_timeout_s=probe_timeout_s)
    return format_cluster(view, stack.cluster.gcs_address), cluster_json(view), view.healthy


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@config_option
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctl(args: tuple[str, ...], config_path: Path) -> None:
    """Run supervisorctl against this stack: `baremetal ctl status` is `supervisorctl -c <conf> status`.

    Everything after `ctl` goes to supervisorctl untouched (e.g. `baremetal ctl tail -f api stderr`);
    with no arguments it opens supervisorctl's shell. Its exit status is supervisorctl's.
    """
    from baremetal.errors import UsageError

    stack = load(config_path)
    conf = stack.supervisord_conf
    if not conf.exists():
        raise UsageError(f"{conf} does not exist yet: run `baremetal up` (or `baremetal render`) first")
    argv = [sys.executable, "-X", "utf8", "-m", "supervisor.supervisorctl", "-c", str(conf), *args]
    execute = (click.get_current_context().find_root().obj or {}).get("exec") or os.execv
    sys.stdout.flush()
    sys.stderr.flush()
    execute(sys.executable, argv)


COMMANDS = [up, down, start, stop, restart, status, ctl]
