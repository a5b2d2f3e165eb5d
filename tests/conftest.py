"""Shared fixtures: short state roots (unix socket paths are limited to 107 bytes), free ports, stack files."""

from __future__ import annotations

import shutil
import socket
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.demo_stack import demo_models, demo_stack, fastchat_python, pooling_reference, vllm_python  # noqa: F401

DATA = Path(__file__).parent / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "demo_stack_down: brings the shared demo stack down; runs after every "
                                       "other test that uses it")


def pytest_collection_modifyitems(config, items):
    """Run the tests that use the shared demo stack (three vLLM servers, ~7 GB) one after the other, from
    where the first of them was collected, with the one that brings it down last: it is then up only
    while they run, and no test finds it gone."""
    users = [item for item in items if "demo_stack" in getattr(item, "fixturenames", ())]
    if not users:
        return
    first = items.index(users[0])
    chosen = {id(item) for item in users}
    rest = [item for item in items if id(item) not in chosen]
    last = [item for item in users if item.get_closest_marker("demo_stack_down")]
    users = [item for item in users if item not in last] + last
    items[:] = rest[:first] + users + rest[first:]


def free_port() -> int:
    """A TCP port that nothing listens on right now (tests never hard-code ports: helpers run side by side)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
