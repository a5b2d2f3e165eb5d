"""Shared pieces of the CLI: the group that turns errors into messages, and common options."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable

import click

from baremetal.errors import BaremetalError


class CommandFailed(click.ClickException):
    """A BaremetalError on its way out: Click prints it and exits with its code."""

    def __init__(self, error: BaremetalError):
        super().__init__(str(error))
        self.exit_code = error.exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class BaremetalGroup(click.Group):
    """A group whose commands report BaremetalError as a message with its exit code."""

    def invoke(self, context: click.Context) -> Any:
        try:
            return super().invoke(context)
        except BaremetalError as error:
            raise CommandFailed(error) from None
        except OSError as error:
            # The last net under the command's own handling: a file the system refused is a message, not a traceback.
            where = f": {error.filename}" if error.filename else ""
            click.echo(f"Error: {error.strerror or error}{where}", err=True)
            raise click.exceptions.Exit(1) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(130) from None


def config_option(function: Callable) -> Callable:
    """-c/--config FILE and --node NAME on a command (they also work before the command name)."""

    @click.option("-c", "--config", "config", metavar="FILE", default=None,
                  help="Stack file (default: $BAREMETAL_CONFIG, else ./baremetal.toml).")
    @click.option("--node", "node", metavar="NAME", default=None,
                  help="In a [cluster], the node this machine is (default: $BAREMETAL_NODE, else the node whose "
                       "address is on this machine).")
    @functools.wraps(function)
    def wrapper(*args: Any, config: str | None = None, node: str | None = None, **kwargs: Any) -> Any:
        context = click.get_current_context()
        root = context.find_root()
        if node:
            root.ensure_object(dict)
            root.obj["node"] = node
        chosen = config or (root.obj or {}).get("config")
        from baremetal.config.load import resolve_config_path

        return function(*args, config_path=resolve_config_path(chosen), **kwargs)

    return wrapper


def json_option(function: Callable) -> Callable:
    """--json on a command; with it, an error (an invalid stack file, supervisord not running) is printed as
    a JSON object {"error": {...}} on stdout too, with the same exit status."""

    @functools.wraps(function)
    def wrapper(*args: Any, as_json: bool = False, **kwargs: Any) -> Any:
        try:
            return function(*args, as_json=as_json, **kwargs)
        except BaremetalError as error:
            if not as_json:
                raise
            print_json({"error": error_document(error)})
            raise click.exceptions.Exit(error.exit_code) from None

    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON instead of a table (errors too: {\"error\": {...}}).")(wrapper)


def error_document(error: BaremetalError) -> dict:
    """An error as JSON: its message, kind and exit status, and for a stack file every issue with its field."""
    from baremetal.errors import ConfigError

    document: dict[str, Any] = {"message": str(error), "type": type(error).__name__, "exit_code": error.exit_code}
    if isinstance(error, ConfigError):
        document["file"] = str(error.file)
        document["issues"] = [{"path": issue.path, "message": issue.message, "line": issue.line}
                              for issue in error.issues]
    return document


def load(config_path: Path, node=None):
    """The validated stack (in a cluster: for `node`, else this machine's node, see --node), warnings
    printed to stderr."""
    from baremetal.config import load_stack

    context = click.get_current_context(silent=True)
    node = node or ((context.find_root().obj or {}).get("node") if context else None)
    stack = load_stack(config_path, node=node)
    for warning in stack.warnings:
        click.echo(f"Warning: {warning.format(stack.source)}", err=True)
    return stack


def nvml_module() -> Any:
    """The NVML seam for commands: a pynvml-like module that tests pass as `obj["pynvml"]` to the CLI
    (CliRunner's `obj`); None means the real nvidia-ml-py, imported only when a command reads the GPUs."""
    context = click.get_current_context(silent=True)
    return ((context.find_root().obj or {}) if context else {}).get("pynvml")


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain left-aligned text table."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [headers] + rows]
    return "\n".join(lines)
