"""doctor, pull: is this host ready for the stack, and fetch models into models_dir."""

from __future__ import annotations

from pathlib import Path

import click

from baremetal.cli.common import config_option, json_option, load, nvml_module, print_json

_MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command()
@config_option
@json_option
def doctor(config_path: Path, as_json: bool) -> None:
    """Check that this host can run the stack, and say what to fix.

    Checks the NVIDIA driver and NVML, the GPUs the stack names, the CUDA version of each vLLM env's
    torch against the driver, the size of /dev/shm (vLLM and NCCL need a large one), free disk, each
    env's interpreter and engine packages (from their metadata, without importing vLLM), the model
    folders (config.json present), every port the stack listens on (a port held by anything but this
    stack's own program fails), supervisord, and the boot unit. Exits 1 when any check fails.
    """
    from baremetal.doctor.gather import run_doctor, summarise
    from baremetal.install.nvidia import PynvmlLibrary
    from baremetal.install.runner import SubprocessRunner
    from baremetal.install.systemd import SYSTEM_UNIT_DIR, user_unit_dir
    from baremetal.plan.pipeline import program_specs
    from baremetal.supervisord.client import SupervisorClient

    stack = load(config_path)
    checks = run_doctor(stack, program_specs(stack), PynvmlLibrary(nvml_module()), SubprocessRunner(),
                        SupervisorClient(stack.socket_path, timeout_s=5), (SYSTEM_UNIT_DIR, user_unit_dir()))
    counts = summarise(checks)
    if as_json:
        print_json({"stack": stack.stack.name, "file": str(stack.source), "counts": counts,
                    "checks": [check.as_dict() for check in checks]})
    else:
        click.echo(f"baremetal doctor: stack {stack.stack.name!r} ({stack.source})")
        width = max(len(check.name) for check in checks)
        for check in checks:
            click.echo(f"  {_MARKS[check.status]}  {check.name.ljust(width)}  {check.summary}")
            if check.fix and check.status != "ok":
                click.echo(f"        {' ' * width}  -> {check.fix}")
        click.echo(f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s)")
    if counts["fail"]:
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("model")
@click.option("--source", type=click.Choice(["hf", "modelscope"]), default="hf", show_default=True,
              help="hf: Hugging Face (honours HF_ENDPOINT and HF_TOKEN); modelscope: ModelScope (MODELSCOPE_ENDPOINT).")
@click.option("--revision", default=None, metavar="REV", help="Branch, tag or commit (default: the main branch).")
@click.option("--to", "into", type=click.Path(file_okay=False), default=None,
              help="Download into DIR instead of <models_dir>/MODEL.")
@config_option
def pull(model: str, source: str, revision: str | None, into: str | None, config_path: Path) -> None:
    """Download MODEL (ORG/NAME) into the stack's models_dir, resuming where a previous pull stopped.

    Files already complete are not fetched again, so re-running after an interruption finishes the job.
    Needs the hub clients: pip install 'baremetal[pull]'. The model lands in <models_dir>/ORG/NAME, which
    a [[model]] names with path = "ORG/NAME".
    """
    from baremetal.install.pull import Pull, check_repo_id, pull_model, pull_target

    check_repo_id(model)
    models_dir = None if into else load(config_path).stack.models_dir
    target = pull_target(model, models_dir, Path(into).absolute() if into else None)
    click.echo(f"Pulling {model} from {source}{f' at {revision}' if revision else ''} into {target}")
    folder = pull_model(Pull(model, source, revision, target))
    if not (folder / "config.json").is_file():
        click.echo(f"Warning: {folder} has no config.json; vLLM and FastChat will not load it as a model", err=True)
    click.echo(f"Done: {folder}")
    if models_dir is not None:
        click.echo(f'Use it in the stack file with path = "{model}"')


COMMANDS = [doctor, pull]
