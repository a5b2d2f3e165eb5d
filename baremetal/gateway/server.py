"""Run the gateway for a stack: resolve the API keys, build the app, serve it with uvicorn."""

from __future__ import annotations

import logging

from baremetal.config.model import Stack

log = logging.getLogger("baremetal.gateway")


def serve(stack: Stack, host: str | None = None, port: int | None = None, access_log: bool = False) -> None:
    """Serve until stopped (SIGTERM/SIGINT); SIGHUP reloads the stack file's settings (gateway.reload).
    Keys are resolved first: a missing key file stops it here."""
    import signal

    import uvicorn

    from baremetal.gateway.app import Gateway, create_app
    from baremetal.gateway.connections import guarded_protocol
    from baremetal.gateway.keys import key_table

    signal.signal(signal.SIGHUP, signal.SIG_IGN)     # until the event loop handles it: never a reason to exit
    keys = key_table(stack.api)
    gateway = Gateway(stack, keys, access_log=access_log)
    host = stack.api.host if host is None else host
    port = stack.api.port if port is None else port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("gateway for stack %r on %s:%d: %d model(s) (%s), %s", stack.stack.name, host, port,
             len(gateway.routes), ", ".join(gateway.routes) or "none", keys.describe())
    # loop "auto" picks uvloop when installed (a dependency). No access log by default (one line per
    # request costs throughput); with it, the gateway writes its own line per model request (status,
    # model, backend, key name, tokens, request id; never a key). On SIGTERM, requests in flight get 5 s
    # to finish: well inside supervisord's stopwaitsecs.
    # http: uvicorn's httptools protocol with a deadline for each request to arrive and a cap on open
    # connections (gateway.connections); the idle time between two requests of one connection stays
    # uvicorn's timeout_keep_alive (5 s).
    config = uvicorn.Config(create_app(gateway), host=host, port=port, loop="auto",
                            http=guarded_protocol(gateway.limits),
                            lifespan="on", access_log=False, server_header=False, backlog=2048,
                            proxy_headers=False, timeout_graceful_shutdown=5,
                            log_config=None)
    uvicorn.Server(config).run()
