"""`baremetal watchdog`: the watchdog of one stack as supervisord runs it, with its real seams (NVML,
supervisord's socket, HTTP, the metrics server), until SIGTERM."""

from __future__ import annotations

from typing import Any

from baremetal.errors import BaremetalError
from baremetal.host.nvml import GpuMonitor
from baremetal.supervisord.client import SupervisorClient
from baremetal.watchdog.events import EventLog
from baremetal.watchdog.loop import WatchdogLoop


def announce_settings(stack: Any, specs: list) -> Any:
    """When supervisord runs it: say what settings this watchdog runs with (baremetal.stack.settings), and
    start keeping the record of supervisord's processes for `down` (supervisord.leftovers; supervisord is
    this process's parent). Returns the record's thread, or None."""
    import os

    from baremetal.stack.settings import digest_of, publish, supervised_as, watchdog_settings
    from baremetal.supervisord.leftovers import RecordKeeper, record_path

    if not supervised_as("watchdog"):
        return None
    publish(stack, "watchdog", digest_of(watchdog_settings(stack, specs)))
    keeper = RecordKeeper(record_path(stack.run_dir), os.getppid())
    keeper.start()
    return keeper


def serve(stack: Any) -> None:
    """Run the watchdog of `stack` until SIGTERM or SIGINT: what `baremetal watchdog` does (main thread)."""
    import signal

    from baremetal.config.api_keys import resolve_keys
    from baremetal.plan.pipeline import program_specs
    from baremetal.stack.http_client import LiteClient
    from baremetal.watchdog.events import events_path
    from baremetal.watchdog.metrics import MetricsServer

    config = stack.watchdog
    try:
        keys = resolve_keys(stack.api.key_specs)
    except BaremetalError:
        keys = []                         # probes of the API then accept 401 as "alive"
    monitor = GpuMonitor()
    monitor.start()
    # The standard library's client: 0.16 ms of CPU per local request against httpx's 0.8 (measured here),
    # which matters at a few requests per program every second.
    http = LiteClient()
    cluster = remote = None
    if stack.cluster is not None and stack.is_head:
        from baremetal.cluster.remote import RemoteWatch
        from baremetal.cluster.watch import ClusterWatch

        cluster = ClusterWatch(stack)
        remote = RemoteWatch(stack, http, config.probe_timeout_s, config.unhealthy_after)
    specs = program_specs(stack)
    keeper = announce_settings(stack, specs)
    watchdog = WatchdogLoop(config, specs, lambda: SupervisorClient(stack.socket_path, timeout_s=10.0),
                        http, monitor, EventLog(events_path(stack.root)), stack.watchdog_state_path,
                        api_key=keys[0] if keys else None, cluster=cluster, remote=remote, stack=stack)
    metrics = MetricsServer(config.metrics_host, config.metrics_port, watchdog.metrics_page)
    metrics.start()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: watchdog.stop())
    try:
        watchdog.run()
    finally:
        metrics.stop()
        monitor.close()
        if keeper is not None:
            keeper.stop()
        if remote is not None:
            remote.close()
