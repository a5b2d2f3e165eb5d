"""Stack + host + what is on disk -> one EnvPlan per env: the commands that bring it to what the stack
asks for, or none when its lock file says it already is. Pure: `build.py` runs the steps.

An env is up to date when its lock file (<prefix>/baremetal-lock.json, written last by a successful
build) holds the hash of the same request: kind, interpreter, packages, removals, extras, pip_args.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from baremetal.config.model import Env, Stack, frozen_mapping
from baremetal.errors import EnvironmentBuildError, UsageError
from baremetal.install.packages import FLASH_ATTN, Packages, env_packages, env_roles

LOCK_NAME = "baremetal-lock.json"
LOCK_FORMAT = 1


@dataclass(frozen=True)
class InstallHost:
    """What planning needs to know about the host (gathered by host.gather_install_host)."""

    nvidia_gpu: bool
    default_python: str              # creates venvs whose env sets no python (baremetal's own interpreter)
    conda_exe: str | None = None     # conda, mamba or micromamba on PATH
    cuda_home: str | None = None     # a CUDA toolkit (bin/nvcc), for building flash-attn


@dataclass(frozen=True)
class EnvState:
    """What is on disk for one env now."""

    interpreter_exists: bool
    prefix_has_files: bool           # the prefix folder exists and is not empty
    lock_hash: str | None = None     # request_hash of the last successful build
    lock_create_hash: str | None = None


@dataclass(frozen=True)
class Step:
    """One command of a build. `packages` names what it installs, for the error message if it fails."""

    title: str
    argv: tuple[str, ...]
    environment: Mapping[str, str] = field(default_factory=frozen_mapping)
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnvPlan:
    env: Env
    action: str                      # "up to date", "create", "update", "rebuild", "check" (system), "skip"
    packages: Packages
    steps: tuple[Step, ...]
    request: Mapping[str, object]
    request_hash: str
    create_hash: str
    notes: tuple[str, ...] = ()

    @property
    def lock_path(self) -> Path | None:
        return self.env.path / LOCK_NAME if self.env.path is not None else None

    @property
    def interpreter(self) -> str:
        return self.env.interpreter


def base_interpreter(env: Env, host: InstallHost) -> str:
    """The interpreter that creates a venv: the env's `python` ("3.11" means python3.11), else baremetal's."""
    if not env.python:
        return host.default_python
    return f"python{env.python}" if re.fullmatch(r"\d+(\.\d+)*", env.python) else env.python


def conda_python(env: Env, host: InstallHost) -> str:
    """The Python version a conda env is created with: its `python`, else the one baremetal runs on."""
    if env.python and re.fullmatch(r"\d+(\.\d+)*", env.python):
        return env.python
    if env.python:
        raise EnvironmentBuildError(f"env {env.name!r}: python = {env.python!r}: conda envs take a version "
                                    'such as "3.11"')
    match = re.search(r"python(\d+\.\d+)", Path(host.default_python).name)
    return match.group(1) if match else "3.11"


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def request_of(env: Env, packages: Packages, host: InstallHost) -> tuple[dict, str, str]:
    """(request, its hash, the hash of the part that needs a new env when it changes)."""
    creator = conda_python(env, host) if env.kind == "conda" else base_interpreter(env, host)
    create = {"format": LOCK_FORMAT, "kind": env.kind, "python": creator}
    request = dict(create, install=list(packages.install), remove=list(packages.remove),
                   extras=list(env.extras), pip_args=list(env.pip_args))
    return request, _digest(request), _digest(create)


def _create_step(env: Env, host: InstallHost, clear: bool) -> Step:
    assert env.path is not None
    if env.kind == "conda":
        if not host.conda_exe:
            raise EnvironmentBuildError(f"env {env.name!r} is kind \"conda\" but no conda, mamba or micromamba is "
                                        "on PATH; install one, or use kind = \"venv\"")
        argv = [host.conda_exe, "create", "-y", "-p", str(env.path), f"python={conda_python(env, host)}", "pip"]
        if Path(host.conda_exe).name == "micromamba":
            argv += ["-c", "conda-forge"]            # micromamba has no default channel
        return Step(f"create conda env {env.path}", tuple(argv))
    argv = [base_interpreter(env, host), "-m", "venv"] + (["--clear"] if clear else []) + [str(env.path)]
    return Step(f"create venv {env.path}", tuple(argv))


def _pip(env: Env, *args: str) -> tuple[str, ...]:
    return (env.interpreter, "-m", "pip", *args)


def _install_steps(env: Env, packages: Packages, host: InstallHost, creating: bool) -> list[Step]:
    steps: list[Step] = []
    if creating:
        steps.append(Step("upgrade pip", _pip(env, "install", *env.pip_args, "--upgrade", "pip")))
    if packages.install:
        steps.append(Step(f"install {len(packages.install)} package(s)",
                          _pip(env, "install", *env.pip_args, *packages.install), packages=packages.install))
    if packages.remove:
        steps.append(Step(f"remove {', '.join(packages.remove)} (CUDA builds that break `import vllm` on CPU)",
                          _pip(env, "uninstall", "-y", *packages.remove), packages=packages.remove))
    if FLASH_ATTN in env.extras:
        steps.append(_flash_attn_step(env, host))
    return steps


def _flash_attn_step(env: Env, host: InstallHost) -> Step:
    """flash-attn compiles against the CUDA toolkit and the torch already in the env: CUDA_HOME must point
    at the toolkit, and build isolation must be off (an isolated build cannot see the env's torch)."""
    if not host.cuda_home:
        raise EnvironmentBuildError(f"env {env.name!r}: extras flash-attn builds with the CUDA toolkit, and none "
                                    "was found (no $CUDA_HOME, /usr/local/cuda or nvcc on PATH); install it and "
                                    "set CUDA_HOME, or remove the extra")
    environment = {"CUDA_HOME": host.cuda_home}
    return Step(f"build flash-attn against {host.cuda_home}",
                _pip(env, "install", *env.pip_args, "--no-build-isolation", FLASH_ATTN),
                frozen_mapping(environment), (FLASH_ATTN,))


def plan_env(env: Env, roles: frozenset[str], host: InstallHost, state: EnvState, rebuild: bool = False) -> EnvPlan:
    """The plan for one env (raises EnvironmentBuildError when it cannot be built here at all)."""
    if env.kind == "system":
        return EnvPlan(env, "check", Packages(()), (), {}, "", "",
                       (f"kind \"system\": {env.interpreter} is used as it is; install only checks it runs",))
    packages = env_packages(env.name, env.packages, roles, host.nvidia_gpu)
    request, request_hash, create_hash = request_of(env, packages, host)
    notes = packages.notes
    if not packages.install and not env.extras:
        return EnvPlan(env, "skip", packages, (), request, request_hash, create_hash,
                       notes + ("no model or api uses this env and it lists no packages",))
    if state.interpreter_exists and not rebuild and state.lock_hash == request_hash:
        return EnvPlan(env, "up to date", packages, (), request, request_hash, create_hash, notes)
    if not state.interpreter_exists and state.prefix_has_files:
        raise EnvironmentBuildError(f"env {env.name!r}: {env.path} exists but holds no Python environment "
                                    f"(no {env.interpreter}); move it away or set [env.{env.name}].path elsewhere")
    recreate = rebuild or (state.interpreter_exists and state.lock_create_hash not in (None, create_hash))
    creating = recreate or not state.interpreter_exists
    action = "rebuild" if recreate else ("create" if creating else "update")
    steps = ([_create_step(env, host, clear=recreate)] if creating else []) + \
        _install_steps(env, packages, host, creating)
    return EnvPlan(env, action, packages, tuple(steps), request, request_hash, create_hash, notes)


def plan_install(stack: Stack, host: InstallHost, states: Mapping[str, EnvState], only: tuple[str, ...] = (),
                 rebuild: bool = False) -> list[EnvPlan]:
    """Plans for the stack's envs (or only those named), in name order."""
    unknown = [name for name in only if name not in stack.envs]
    if unknown:
        raise UsageError(f"no env named {', '.join(map(repr, unknown))} in {stack.source}; its envs: "
                                    f"{', '.join(sorted(stack.envs)) or 'none'}")
    roles = env_roles(stack)
    return [plan_env(env, roles.get(name, frozenset()), host, states[name], rebuild)
            for name, env in sorted(stack.envs.items()) if not only or name in only]
