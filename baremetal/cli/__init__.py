"""The `baremetal` command: a thin Click layer over the library. Each command parses its flags, calls one
function, and prints; a BaremetalError becomes a clear message and an exit code, never a traceback.

Command modules import nothing heavy at load time, so `baremetal --help` and `status` stay fast.
"""

from __future__ import annotations

import sys

import click

from baremetal import __version__
from baremetal.cli.common import BaremetalGroup

HELP = """Run LLM serving stacks (vLLM, FastChat) on bare-metal GPU servers under supervisord.

One stack file (TOML, default ./baremetal.toml, or -c FILE, or $BAREMETAL_CONFIG) describes a node:
its models, engines, GPUs, ports, the OpenAI endpoint and the watchdog policy. baremetal renders
plain supervisord program files from it, starts and watches them, and restarts workers that hang.

\b
Typical day:
  baremetal init --profile gpu-node    write a commented starter stack file
  baremetal validate                   check it (every error at once, with field paths)
  baremetal doctor                     check the host: driver, GPUs, CUDA, /dev/shm, ports, models
  baremetal install                    build the runtime environments (vLLM, FastChat)
  baremetal up                         render, start supervisord, wait until every model serves
  baremetal status                     what runs, what is ready, restarts, GPUs
  baremetal top                        all of it live: programs, models, GPUs, events, logs
  baremetal logs -f                    follow every program's logs (or one: logs vllm-chat -f)
  baremetal down                       stop everything

Exit status: 0 success, 1 failure, 2 bad usage or a bad stack file, 3 supervisord not running.
"""


@click.group(cls=BaremetalGroup, help=HELP, context_settings={"help_option_names": ["-h", "--help"],
                                                               "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="baremetal")
@click.option("-c", "--config", "config", metavar="FILE", default=None,
              help="Stack file for every command (default: $BAREMETAL_CONFIG, else ./baremetal.toml).")
@click.option("--node", "node", metavar="NAME", default=None,
              help="In a [cluster], the node this machine is (default: $BAREMETAL_NODE, else the node whose "
                   "address is on this machine).")
@click.pass_context
def cli(context: click.Context, config: str | None, node: str | None) -> None:
    context.ensure_object(dict)
    context.obj["config"] = config
    context.obj["node"] = node


def _register() -> None:
    from baremetal.cli import (cluster_commands, demo_commands, gateway_commands, host_commands, install_commands,
                               log_commands, run_commands, stack_commands, top_commands, watchdog_commands)

    for module in (stack_commands, run_commands, log_commands, top_commands, install_commands, host_commands,
                   demo_commands, gateway_commands, watchdog_commands, cluster_commands):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="baremetal"))
