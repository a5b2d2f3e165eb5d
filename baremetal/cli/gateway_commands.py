"""gateway: the node's OpenAI-compatible endpoint (supervisord runs it as the `api` program)."""

from __future__ import annotations

from pathlib import Path

import click

from baremetal.cli.common import config_option, load


@click.command()
@click.option("--host", default=None, help="Listen address (default: the stack's api.host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Listen port, 1-65535 (default: the stack's api.port).")
@click.option("--access-log", is_flag=True,
              help="Log one line per model request: method, path, status, model, backend, key name, tokens and "
                   "request id (never a key).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Gateway processes sharing the port (SO_REUSEPORT; default: the stack's api.workers, 1).")
@config_option
def gateway(host: str | None, port: int | None, access_log: bool, workers: int | None, config_path: Path) -> None:
    """Serve every model of the stack on one OpenAI-compatible endpoint.

    Routes every endpoint vLLM serves by the request's "model" to vLLM servers, FastChat workers (with tool
    calling and the Responses API) and [[program]] backends; balances replicas; checks api.api_keys and the
    [[api.key]] names, model lists and limits. `baremetal up` runs it under supervisord when
    api.kind = "gateway"; run it by hand to try a stack. Stops on SIGTERM or Ctrl-C. SIGHUP makes it
    read the stack file again and take its keys, models and time limits without dropping a connection
    (`baremetal up` sends it when they change; with --workers, every process takes them); a new host,
    port or number of workers needs a restart.
    """
    from baremetal.gateway.server import serve

    serve(load(config_path), host=host, port=port, access_log=access_log, workers=workers)


COMMANDS = [gateway]
