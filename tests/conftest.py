"""Shared fixtures: short state roots (unix socket paths are limited to 107 bytes), free ports, stack files."""

from __future__ import annotations

import shutil
import socket
import tempfile
import textwrap
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


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
