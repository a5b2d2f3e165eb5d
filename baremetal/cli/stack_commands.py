"""init, validate, render: from a stack file to supervisord files, with no GPU and no models needed."""

from __future__ import annotations

from pathlib import Path

import click

from baremetal.cli.common import config_option, json_option, load, print_json, table

PROFILES = ("cpu-demo", "gpu-node", "fastchat")


@click.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--profile", type=click.Choice(PROFILES), default="gpu-node", show_default=True,
              help="cpu-demo: tiny models on CPU; gpu-node: vLLM chat + embed + rerank on one GPU; "
                   "fastchat: controller, a FastChat worker and its API server.")
@click.option("--force", is_flag=True, help="Replace an existing file (the old one is kept as FILE.bak).")
@config_option
def init(path: str | None, profile: str, force: bool, config_path: Path) -> None:
    """Write a commented starter stack file.

    PATH defaults to the stack file path (-c, $BAREMETAL_CONFIG, or ./baremetal.toml). An existing file
    is never replaced without --force.
    """
    from baremetal.config.profiles import write_profile

    target = Path(path).absolute() if path else config_path
    backup = write_profile(profile, target, force)
    if backup:
        click.echo(f"Kept the previous file as {backup}")
    click.echo(f"Wrote {target} (profile {profile}). Next: edit it, then `baremetal validate -c {target}`.")


@click.command()
@config_option
@json_option
def validate(config_path: Path, as_json: bool) -> None:
    """Check the stack file and show what it describes.

    Reports every problem at once, each with the file, line and field path (e.g. model[2].port), and
    exits 2 if there is any. Needs neither the models nor a GPU: `baremetal doctor` checks the host.
    """
    from baremetal.config.cluster import NodeChoice, NodeUnknownError
    from baremetal.plan.pipeline import checked_specs

    try:
        stacks = [load(config_path)]
    except NodeUnknownError as unknown:
        # A cluster file checked away from its nodes: check it as each node would see it.
        stacks = [load(config_path, node=NodeChoice(name, "--node", None)) for name in unknown.nodes]
    views = [(stack, checked_specs(stack)) for stack in stacks]
    if as_json:
        documents = [{"file": str(stack.source), "stack": stack.stack.name, "valid": True,
                      "node": stack.cluster.local if stack.cluster else None,
                      "warnings": [w.format(stack.source) for w in stack.warnings],
                      "programs": [_spec_json(spec) for spec in specs]} for stack, specs in views]
        print_json(documents[0] if len(documents) == 1 else {"valid": True, "nodes": documents})
        return
    for stack, specs in views:
        node = f", node {stack.cluster.local!r} ({stack.cluster.local_node.role})" if stack.cluster else ""
        click.echo(f"{stack.source}: OK: stack {stack.stack.name!r}{node}, {len(stack.models)} model(s), "
                   f"{len(stack.programs)} extra program(s), {len(specs)} supervisord program(s) here")
        click.echo(_programs_table(specs))


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write DIR/supervisord.conf and DIR/conf.d/*.conf instead of <root>/supervisor/.")
@config_option
def render(out: str | None, config_path: Path) -> None:
    """Write the supervisord files for the stack.

    Writes <root>/supervisor/supervisord.conf and conf.d/<program>.conf atomically, only where the
    content changed; removes program files it generated before and no longer generates; never touches
    files it did not write. Prints what changed. Running programs are not restarted: `baremetal up` does that.
    """
    from baremetal.plan.pipeline import generate

    stack = load(config_path)
    result = generate(stack, Path(out).absolute() if out else None)
    changes = result.changes
    for label, paths in (("created", changes.created), ("updated", changes.updated), ("removed", changes.removed)):
        for relative in paths:
            click.echo(f"{label:8} {result.target / relative}")
    if not changes.changed:
        click.echo(f"unchanged: {len(changes.unchanged)} file(s) in {result.target}")
    click.echo(_programs_table(result.specs))


def _spec_json(spec) -> dict:
    return {"name": spec.name, "role": spec.role, "model": spec.model, "engine": spec.engine,
            "host": spec.host, "port": spec.port, "gpus": list(spec.gpus) if spec.gpus is not None else None,
            "command": list(spec.argv), "notes": list(spec.notes)}


def _programs_table(specs) -> str:
    rows = [[spec.name, spec.role, spec.model or "-", f"{spec.host or '-'}:{spec.port}" if spec.port else "-",
             ",".join(map(str, spec.gpus)) if spec.gpus else ("cpu" if spec.gpus == () else "-"),
             "; ".join(spec.notes) or spec.engine or "-"] for spec in specs]
    return table(rows, ["PROGRAM", "ROLE", "MODEL", "LISTEN", "GPUS", "ENGINE"])


COMMANDS = [init, validate, render]
