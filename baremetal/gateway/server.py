"""Run the gateway for a stack: resolve the API keys, build the app, serve it with uvicorn (one process, or
api.workers processes sharing the port: baremetal.gateway.workers)."""

from __future__ import annotations

import logging
import socket

from baremetal.config.model import Stack
from baremetal.errors import BaremetalError

log = logging.getLogger("baremetal.gateway")


def serve(stack: Stack, host: str | None = None, port: int | None = None, access_log: bool = False,
          workers: int | None = None) -> None:
    """Serve until stopped (SIGTERM/SIGINT); SIGHUP reloads the stack file's settings (gateway.reload; with
    several workers, each reloads). Keys are resolved first: a missing key file stops it here."""
    import signal

    from baremetal.gateway.keys import key_table
    from baremetal.gateway.routing import routes_from_stack

    signal.signal(signal.SIGHUP, signal.SIG_IGN)     # until the event loop handles it: never a reason to exit
    keys = key_table(stack.api)
    routes = routes_from_stack(stack)
    host = stack.api.host if host is None else host
    port = stack.api.port if port is None else port
    count = workers or stack.api.workers
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("gateway for stack %r on %s:%d: %d model(s) (%s), %s%s", stack.stack.name, host, port,
             len(routes), ", ".join(routes) or "none", keys.describe(),
             f", {count} worker processes" if count > 1 else "")
    if count == 1:
        _run(stack, keys, access_log, host, port)
        return
    from baremetal.gateway.shared_limits import SharedLimiter
    from baremetal.gateway.workers import reuseport_socket, serve_workers

    try:
        reuseport_socket(host, port).close()         # in use by another program: say so once, here
    except OSError as error:
        raise BaremetalError(f"the gateway cannot listen on {host}:{port}: {error.strerror}") from None
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    limiter = SharedLimiter.for_table(keys, stack.run_dir)
    folder = stack.run_dir / "gateway-workers"
    serve_workers(count, folder, lambda index: _run(stack, keys, access_log, host, port, limiter, (index, folder),
                                                    reuseport_socket(host, port)))


def _run(stack: Stack, keys, access_log: bool, host: str, port: int, limiter=None, worker=None,
         sock: socket.socket | None = None) -> None:
    import uvicorn

    from baremetal.gateway.app import Gateway, create_app
    from baremetal.gateway.connections import guarded_protocol

    gateway = Gateway(stack, keys, access_log=access_log, limiter=limiter, worker=worker)
    # loop "auto" picks uvloop when installed (a dependency). No access log by default (one line per
    # request costs throughput); with it, the gateway writes its own line per model request (status,
    # model, backend, key name, tokens, request id; never a key). On SIGTERM, requests in flight get 5 s
    # to finish: well inside supervisord's stopwaitsecs.
    # http: uvicorn's httptools protocol with a deadline for each request to arrive and a cap on open
    # connections (gateway.connections, per process); the idle time between two requests of one
    # connection stays uvicorn's timeout_keep_alive (5 s).
    config = uvicorn.Config(create_app(gateway), host=host, port=port, loop="auto",
                            http=guarded_protocol(gateway.limits),
                            lifespan="on", access_log=False, server_header=False, backlog=2048,
                            proxy_headers=False, timeout_graceful_shutdown=5,
                            log_config=None)
    uvicorn.Server(config).run(sockets=[sock] if sock else None)
