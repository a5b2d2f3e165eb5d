"""Runs EnvPlans through the subprocess seam and records what they resolved.

Nothing half-installed is ever marked done: a build first removes the env's lock file, runs its steps,
and writes the new lock (request hash + `pip freeze`) last, atomically. A failed step raises an error
naming the env, the step, the package and pip's last lines; the next run sees no matching lock and
tries again. Builds of one env are serialised with a file lock beside it (parallel installs wait).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Protocol

from baremetal import __version__
from baremetal.errors import EnvironmentBuildError
from baremetal.install.host import read_lock
from baremetal.install.plan import EnvPlan, Step
from baremetal.install.runner import CommandResult, CommandRunner
from baremetal.host.files import atomic_write

_NO_MATCH = re.compile(r"(?:No matching distribution found for|Could not find a version that satisfies the "
                       r"requirement)\s+(\S+)")


class BuildProgress(Protocol):
    """Where a build reports what it does; the CLI prints, tests record."""

    def step(self, plan: EnvPlan, step: Step, number: int, total: int) -> None: ...
    def line(self, plan: EnvPlan, text: str, elapsed_s: float) -> None: ...
    def tick(self, plan: EnvPlan, elapsed_s: float) -> None: ...


class QuietProgress:
    def step(self, plan: EnvPlan, step: Step, number: int, total: int) -> None:
        pass

    def line(self, plan: EnvPlan, text: str, elapsed_s: float) -> None:
        pass

    def tick(self, plan: EnvPlan, elapsed_s: float) -> None:
        pass


@dataclass(frozen=True)
class BuildResult:
    env: str
    action: str                  # the plan's action, or "up to date" when a parallel build finished it first
    elapsed_s: float
    lock_path: Path | None = None
    distributions: int = 0       # lines of `pip freeze` recorded


def format_duration(seconds: float) -> str:
    """1m05s, 12.3s: for progress lines."""
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s" if seconds >= 60 else f"{seconds:.1f}s"


def _failure(plan: EnvPlan, step: Step, result: CommandResult) -> EnvironmentBuildError:
    name = plan.env.name
    tail = result.tail()
    missing = next((m.group(1) for line in tail for m in [_NO_MATCH.search(line)] if m), None)
    lines = [f"env {name!r}: step \"{step.title}\" failed (exit status {result.returncode}) after "
             f"{format_duration(result.elapsed_s)}."]
    if missing:
        lines.append(f"Package not found: {missing} (check its name and version in [env.{name}].packages, "
                     "or the index in pip_args)")
    elif step.packages:
        lines.append(f"Packages: {' '.join(step.packages)}")
    lines.append("Last lines of its output:")
    lines += [f"  {line}" for line in tail] or ["  (none)"]
    lines.append(f"Nothing was marked installed in {plan.env.path}; fix the cause and run `baremetal install` again "
                 "(it retries this env).")
    return EnvironmentBuildError("\n".join(lines))


@contextmanager
def _build_lock(plan: EnvPlan) -> Iterator[None]:
    """Hold an exclusive lock beside the env for the whole build (another install of it waits)."""
    assert plan.env.path is not None
    prefix = plan.env.path
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        handle = open(prefix.parent / f".{prefix.name}.install-lock", "w")
    except OSError as error:
        raise EnvironmentBuildError(f"env {plan.env.name!r}: cannot write to {prefix.parent} ({error.strerror}); "
                                    f"set [env.{plan.env.name}].path to a folder you can write, or run as a "
                                    "user who can write there") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _check_writable(plan: EnvPlan) -> None:
    prefix = plan.env.path
    assert prefix is not None
    probe = prefix if prefix.exists() else prefix.parent
    if not os.access(probe, os.W_OK):
        raise EnvironmentBuildError(f"env {plan.env.name!r}: {probe} is not writable by this user; set "
                                    f"[env.{plan.env.name}].path to a folder you can write, or run as its owner")


def check_system_env(plan: EnvPlan, runner: CommandRunner) -> BuildResult:
    """A "system" env is only checked: its interpreter must run."""
    result = runner.run([plan.interpreter, "-c", "import sys; print(sys.version.split()[0])"], timeout_s=60)
    if not result.ok:
        raise EnvironmentBuildError(f"env {plan.env.name!r} (kind \"system\"): {plan.interpreter} does not run: "
                                    + (" ".join(result.tail(3)) or f"exit status {result.returncode}")
                                    + f"; fix [env.{plan.env.name}].python")
    return BuildResult(plan.env.name, "check", result.elapsed_s)


def build_env(plan: EnvPlan, runner: CommandRunner, progress: BuildProgress | None = None) -> BuildResult:
    """Bring one env to its plan; returns at once when the plan says it is up to date."""
    progress = progress or QuietProgress()
    if plan.action == "check":
        return check_system_env(plan, runner)
    if not plan.steps:
        return BuildResult(plan.env.name, plan.action, 0.0, plan.lock_path)
    started = time.monotonic()
    with _build_lock(plan):
        if (read_lock(plan.env) or {}).get("request_hash") == plan.request_hash and Path(plan.interpreter).exists():
            return BuildResult(plan.env.name, "up to date", time.monotonic() - started, plan.lock_path)
        _check_writable(plan)
        assert plan.lock_path is not None
        plan.lock_path.unlink(missing_ok=True)
        for number, step in enumerate(plan.steps, start=1):
            progress.step(plan, step, number, len(plan.steps))
            step_started = time.monotonic()
            result = runner.run(step.argv, step.environment,
                                on_line=lambda text: progress.line(plan, text, time.monotonic() - step_started),
                                on_tick=lambda elapsed_s: progress.tick(plan, elapsed_s))
            if not result.ok:
                raise _failure(plan, step, result)
        freeze = _freeze(plan, runner)
        _write_lock(plan, freeze, time.monotonic() - started)
    return BuildResult(plan.env.name, plan.action, time.monotonic() - started, plan.lock_path, len(freeze))


def _freeze(plan: EnvPlan, runner: CommandRunner) -> list[str]:
    result = runner.run([plan.interpreter, "-m", "pip", "freeze", "--all"], timeout_s=300)
    if not result.ok:
        raise _failure(plan, Step("pip freeze (record what was installed)", ()), result)
    return [line for line in result.lines if line.strip() and not line.startswith(("WARNING", "DEPRECATION"))]


def _write_lock(plan: EnvPlan, freeze: list[str], build_s: float) -> None:
    assert plan.lock_path is not None
    lock = {"format": plan.request.get("format"), "env": plan.env.name, "kind": plan.env.kind,
            "prefix": str(plan.env.path), "request": dict(plan.request), "request_hash": plan.request_hash,
            "create_hash": plan.create_hash, "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_s": round(build_s, 1), "baremetal": __version__, "freeze": freeze}
    atomic_write(plan.lock_path, json.dumps(lock, indent=2) + "\n")
