"""Bring a stack up and down: render, start supervisord if needed, apply the render so that only changed
programs restart, wait until everything serves, and stop everything leaving no process behind.

Output goes through `say` (one line at a time) and a readiness.ProgressLines; supervisord through a
SupervisorClient; the supervisord process through baremetal.daemon.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from baremetal.config.api_keys import probe_key
from baremetal.config.model import Stack
from baremetal.errors import BaremetalError, NotRunningError, SupervisorError, UsageError
from baremetal.host import processes
from baremetal.host.ports import port_holder, port_in_use
from baremetal.plan.spec import ProgramSpec
from baremetal.stack import ownership
from baremetal.stack.changes import Changer
from baremetal.stack.readiness import ProgressLines, Waiter, WaitResult, watchdog_doubts
from baremetal.stack.settings import record_applied
from baremetal.supervisord import daemon
from baremetal.supervisord.client import SupervisorClient
from baremetal.supervisord.logtail import last_text
from baremetal.supervisord.states import STOPPED_STATES, ProcessState

Say = Callable[[str], None]
LOG_LINES = 20
DEEP_PROBE_TIMEOUT_S = 30.0
UNRESPONSIVE_WAIT_S = 10.0


class PortBusyError(BaremetalError):
    """A program's port is taken by a process that is not this stack's."""


class NotReadyError(BaremetalError):
    """`up` or `restart` ended with programs failed or not ready; the message carries their logs."""


@dataclass(frozen=True)
class Applied:
    """What applying a render did to supervisord."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)    # unchanged, but not running: started again
    reloaded: list[str] = field(default_factory=list)   # took changed settings without a restart (the gateway)

    def summary(self) -> str:
        """One line for the operator."""
        parts = [f"{label}: {', '.join(names)}" for label, names in (
            ("added", self.added), ("changed (restarted)", self.changed), ("removed", self.removed),
            ("started", self.started), ("new settings taken without a restart", self.reloaded)) if names]
        return "; ".join(parts) if parts else "nothing changed: no program restarted"


def check_ports(specs: list[ProgramSpec]) -> None:
    """Raise PortBusyError naming every program whose port another process already listens on."""
    busy = []
    for spec in specs:
        if spec.port and port_in_use(spec.host, spec.port):
            holder = port_holder(spec.port) or "another process"
            busy.append(f"port {spec.port} of program {spec.name!r} is already in use by {holder}")
    if busy:
        raise PortBusyError("cannot start: " + "; ".join(busy) + ". Stop that process, or give the program "
                            "another port in the stack file; programs of a stack started by hand outside "
                            "`baremetal up` also hold their ports")


def apply(client: SupervisorClient, specs: list[ProgramSpec], changer: Changer,
          wait: Callable[[list[str]], None] | None = None, wait_last: bool = True, say: Say | None = None,
          refresh: Callable[[Applied], Applied] | None = None) -> Applied:
    """Make a running supervisord match the files on disk: added programs start; changed ones restart,
    drained first and replicas of one model one at a time (`wait` is called between them: the next only
    goes when the previous one serves); removed ones are drained and stop; programs that are stopped or
    gave up start again; the rest are left alone. A changed program is never left stopped, whatever fails."""
    added, changed, removed = client.reload_config()
    order = {spec.name: index for index, spec in enumerate(specs)}
    ordered = lambda names: sorted(names, key=lambda name: (order.get(name, len(order)), name))  # noqa: E731
    touched = set(added) | set(changed)
    blocked = {spec.name for spec in specs if spec.blocked}     # on a cordoned GPU with no spare free
    idle = [info.name for info in client.processes() if info.name in order and info.name not in touched
            and info.name not in blocked and info.state in STOPPED_STATES]
    applied = Applied(ordered(added), ordered(changed), ordered(removed), ordered(idle))
    if refresh is not None:         # programs that read the stack file themselves: before the summary
        applied = refresh(applied)
    if say is not None:
        say(applied.summary())
    by_name = {spec.name: spec for spec in specs}

    def bring_back(batch: list[str]) -> None:
        for name in reversed(ordered(batch)):
            client.remove_group(name)
        check_ports([by_name[name] for name in batch if name in by_name and name not in blocked])
        changer.starting(batch)
        for name in ordered(batch):
            client.add_group(name)

    try:
        if removed:       # the api before its workers, as supervisord would
            changer.take_down(list(reversed(ordered(removed))), "stop")
            for name in removed:
                client.remove_group(name)
            changer.finish(removed)
        check_ports([spec for spec in specs if spec.name in idle or (spec.name in added and spec.name not in blocked)])
        changer.starting(ordered(added) + ordered(idle))
        for name in ordered(added):
            client.add_group(name)
        for name in ordered(idle):
            client.start(name, wait=False)
        changer.roll(ordered(changed), "update", bring_back, wait, wait_last)
    finally:
        _keep_running(client, [name for name in changed if name not in blocked])
    return applied


def _keep_running(client: SupervisorClient, names: list[str]) -> None:
    """Give supervisord back every program in `names` that a failed step left unloaded or stopped."""
    try:
        states = {info.name: info.state for info in client.processes()}
        for name in names:
            if name not in states:
                client.add_group(name)
            elif states[name] == ProcessState.STOPPED:
                client.start(name, wait=False)
    except BaremetalError:
        pass            # supervisord itself is gone: `up` again starts everything


def ensure_supervisord(stack: Stack, specs: list[ProgramSpec], client: SupervisorClient, say: Say) -> bool:
    """Make supervisord answer for this stack: True when this call started it (it then starts every
    program itself). A killed supervisord's leftovers (socket, pidfile, orphaned programs) are cleaned."""
    state = daemon.check(stack, client)
    if state.state == daemon.DaemonState.UNRESPONSIVE:
        deadline = time.monotonic() + UNRESPONSIVE_WAIT_S
        while time.monotonic() < deadline and not client.is_running():
            time.sleep(0.2)
        state = daemon.check(stack, client)
        if state.state == daemon.DaemonState.UNRESPONSIVE:
            raise SupervisorError(state.describe(stack) + "; if it is wedged, `baremetal down` stops it")
    if state.state == daemon.DaemonState.RUNNING:
        return False
    if state.state == daemon.DaemonState.STALE:
        say(f"supervisord (pid {state.pid}) died without cleaning up; removing its socket and pidfile")
    daemon.clean_stale(stack, say)
    check_ports(specs)
    pid = daemon.start(stack, client)
    say(f"started supervisord (pid {pid}) with {stack.supervisord_conf}")
    return True


def failure_report(stack: Stack, result: WaitResult, timeout_s: float) -> str:
    """What failed, in which state, and the last lines of its logs."""
    failed = {name: track for name, track in result.tracks.items() if track.failure} or result.failed
    head = (f"not ready after {result.elapsed_s:.0f}s (timeout {timeout_s:.0f}s)" if result.timed_out
            else f"{len(failed)} program(s) failed")
    lines = [head + ":"]
    for name, track in failed.items():
        state = track.state.name if track.state is not None else "NOT LOADED"
        lines.append(f"  {name}: {state}: {track.failure or 'probe: ' + (track.detail or 'not answered yet')}")
        for suffix in (".log", ".err.log"):
            path = stack.logs_dir / f"{name}{suffix}"
            text = last_text(path, LOG_LINES)
            if text.strip():
                lines.append(f"  --- last lines of {path} ---")
                lines += ["    " + line for line in text.splitlines()]
    lines.append("Programs that did not fail keep starting under supervisord: `baremetal status` shows them, "
                 "`baremetal logs PROGRAM` their logs; fix the cause, then run `baremetal up` again.")
    return "\n".join(lines)


def wait_ready(stack: Stack, client: SupervisorClient, specs: list[ProgramSpec], timeout_s: float,
               progress: ProgressLines, http: object, api_key: str | None) -> WaitResult:
    """Wait for `specs` to serve; raises NotReadyError with the failure report when they do not."""
    from baremetal.stack.probes import probe

    def deep(spec: ProgramSpec):
        key = api_key if spec.probe.kind == "openai" else None
        return probe(spec.probe, http, timeout_s=DEEP_PROBE_TIMEOUT_S, deep=True, api_key=key)

    result = Waiter(client, specs, deep, progress).wait(timeout_s)
    progress.close()
    if not result.ok:
        raise NotReadyError(failure_report(stack, result, timeout_s))
    # The gateway routes only to programs the watchdog calls ready: give it a few ticks to agree.
    interval_s = stack.watchdog.interval_s
    doubts = watchdog_doubts(stack.watchdog_state_path, [spec.name for spec in specs], 3 * interval_s + 2.0,
                             max(10.0, 5 * interval_s))
    for name, why in doubts.items():
        progress.line(f"  note: {name} answers its probe, but the watchdog still says {why}")
    return result


def shutdown(stack: Stack, client: SupervisorClient, specs: list[ProgramSpec], say: Say) -> None:
    """Stop every program and supervisord itself, then make sure no process of the stack is left."""
    state = daemon.check(stack, client)
    running = state.state in (daemon.DaemonState.RUNNING, daemon.DaemonState.UNRESPONSIVE)
    children = daemon.stack_processes(stack, state.pid, alive=running)   # adopted orphans, session, cgroup
    if state.state == daemon.DaemonState.RUNNING:
        try:
            client.shutdown()
        except SupervisorError:
            pass            # already shutting down (another `down`, or a signal): wait for it below
        say(f"stopping supervisord (pid {state.pid}) and its programs, in reverse start order")
    elif state.state == daemon.DaemonState.UNRESPONSIVE:
        processes.signal_pid(state.pid, signal.SIGTERM)
        say(f"supervisord (pid {state.pid}) does not answer: sent it SIGTERM")
    elif state.state == daemon.DaemonState.STALE:
        say(state.describe(stack).split(";")[0] + "; cleaning up what it left")
    else:
        say(f"supervisord for stack {stack.stack.name!r} is not running; nothing to stop")
    if state.pid and state.state in (daemon.DaemonState.RUNNING, daemon.DaemonState.UNRESPONSIVE):
        budget_s = sum(spec.stopwaitsecs for spec in specs) + 15.0
        if not processes.wait_pid_gone(state.pid, budget_s):
            say(f"supervisord (pid {state.pid}) is still stopping after {budget_s:.0f}s: killing it")
            processes.signal_pid(state.pid, signal.SIGKILL)
            processes.wait_pid_gone(state.pid, 5.0)
    leftovers = {process.pid: process for process in processes.still_alive(children)}
    leftovers.update({process.pid: process for process in daemon.stack_processes(stack, state.pid)})
    if leftovers:
        ended = processes.terminate(list(leftovers.values()))
        say(f"ended {len(ended)} process(es) that outlived their program: {', '.join(ended)}")
    daemon.clean_stale(stack, say)
    # The watchdog's memory (restart budgets, programs given up) is for a running stack; after a full
    # down the next `up` starts afresh. The event log keeps the history.
    stack.watchdog_state_path.unlink(missing_ok=True)


def up(stack: Stack, say: Say, progress: ProgressLines, wait: bool, timeout_s: float, http: object = None,
       drain_timeout_s: float | None = None) -> Applied:
    """Render, start supervisord if needed, apply (draining what changes, replicas one at a time), and
    (with `wait`) wait until every program serves."""
    from baremetal.plan.pipeline import generate

    api_key = probe_key(stack.api)
    if http is None:
        from baremetal.stack.http_client import LiteClient

        http = LiteClient()
    deadline_s = time.monotonic() + timeout_s
    with daemon.stack_lock(stack, say):
        generated = generate(stack)
        ownership.prepare(stack, say)        # [stack] user: the folders it writes are its own
        if "supervisord.conf" in generated.changes.updated:
            say("note: supervisord.conf changed; supervisord's own settings apply after "
                "`baremetal down` and `baremetal up` (program changes apply now)")
        client = SupervisorClient(stack.socket_path)
        specs = {spec.name: spec for spec in generated.specs}

        def wait_batch(names: list[str]) -> None:
            startable = [specs[name] for name in names if name in specs and not specs[name].blocked]
            if startable:
                wait_ready(stack, client, startable, max(1.0, deadline_s - time.monotonic()), progress, http, api_key)

        if ensure_supervisord(stack, generated.specs, client, say):
            applied = Applied(added=[spec.name for spec in generated.specs])
            say(applied.summary())
        else:
            changer = Changer(stack, client, specs, say, stack.api.drain_timeout_s if drain_timeout_s is None
                              else drain_timeout_s)
            applied = apply(client, generated.specs, changer, wait_batch, wait_last=wait, say=say,
                            refresh=lambda found: _refresh(stack, client, generated.specs, found, say))
        record_applied(stack)
    blocked = [spec for spec in generated.specs if spec.blocked]
    for spec in blocked:
        say(f"{spec.name} is not started: {spec.blocked}")
    startable = [spec for spec in generated.specs if not spec.blocked]
    if wait and startable:
        result = wait_ready(stack, client, startable, max(1.0, deadline_s - time.monotonic()), progress,
                            http, api_key)
        say(f"all {len(result.tracks)} program(s) running and ready ({result.elapsed_s:.1f}s)")
    if wait and blocked:
        raise NotReadyError("not started (cordoned GPUs): " + "; ".join(f"{s.name}: {s.blocked}" for s in blocked))
    return applied


def _refresh(stack: Stack, client: SupervisorClient, specs: list[ProgramSpec], applied: Applied, say: Say) -> Applied:
    """Programs that read the stack file while they run take its new settings (baremetal.stack.refresh)."""
    from baremetal.stack.refresh import refresh

    untouched = {spec.name for spec in specs} - set(applied.added + applied.changed + applied.started)
    done = refresh(stack, client, specs, untouched, say)
    return replace(applied, changed=applied.changed + done.restarted, reloaded=done.reloaded)


def resolve_programs(names: tuple[str, ...] | list[str], programs: list[str],
                     models: dict[str, list[str]]) -> list[str]:
    """Program names for what the operator typed: a program name, or a served model name (all the
    programs serving it). Unknown names are a usage error listing what exists. Pure."""
    chosen: list[str] = []
    unknown = []
    for name in names:
        found = [name] if name in programs else models.get(name, [])
        if not found:
            unknown.append(name)
        chosen += [program for program in found if program not in chosen]
    if unknown:
        served = f"; models: {', '.join(sorted(models))}" if models else ""
        raise UsageError(f"no program or model named {', '.join(map(repr, unknown))} in this stack; "
                         f"programs: {', '.join(programs) or '(none)'}{served}")
    return chosen


def require_running(client: SupervisorClient, stack: Stack) -> None:
    """Raise NotRunningError (exit 3) with the daemon's story when supervisord does not answer."""
    if not client.is_running():
        raise NotRunningError(daemon.check(stack, client).describe(stack))
