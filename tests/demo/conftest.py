"""Fixtures for the demo-model tests: stack files from examples/demo.toml's entries, a short folder per module.
The engine envs, the demo models and the shared demo stack come from tests/conftest.py."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.demo_stack import EXAMPLE
from tests.support.toml_text import toml_value


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


def stack_text(name: str, models_dir: Path, envs: dict[str, str], models: list[dict],
               controller_port: int | None = None) -> str:
    """A stack file with no api and no watchdog: only the engines under test, on the given interpreters."""
    lines = ["[stack]", f"name = {toml_value(name)}", 'root = "state"', f"models_dir = {toml_value(str(models_dir))}"]
    for env_name, python in envs.items():
        lines += [f"[env.{env_name}]", 'kind = "system"', f"python = {toml_value(python)}"]
    lines += ["[api]", 'kind = "none"', "[watchdog]", "enabled = false"]
    if controller_port:
        lines += ["[controller]", f"port = {controller_port}"]
    for model in models:
        lines += ["[[model]]"] + [f"{key} = {toml_value(value)}" for key, value in model.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def module_tmp():
    """A short temporary folder (stack roots hold a unix socket) shared by one test module's servers."""
    path = Path(tempfile.mkdtemp(prefix="bm-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
