"""Fixtures of the cluster tests: the engine envs they need and two network-namespace hosts. Where this
machine can make hosts (root, iproute2) they must work: a failure to make them fails the tests; only a
machine without root or iproute2 skips them, saying which is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import netns
from tests.support.engine_envs import ensure_env


@pytest.fixture(scope="module")
def ray_python() -> str:
    return str(ensure_env("ray") / "bin" / "python")


@pytest.fixture(scope="module")
def fastchat_python() -> str:
    return str(ensure_env("fastchat") / "bin" / "python")


@pytest.fixture(scope="module")
def chat_model() -> Path:
    """The demo's tiny-chat (made by the vLLM env; FastChat's transformers loads it too)."""
    from baremetal.demo import fixed_chats
    from tests.support.demo_stack import demo_models_made

    return demo_models_made() / fixed_chats.TINY_CHAT


@pytest.fixture(scope="module")
def hosts():
    """Two hosts, head and w1 (module-wide: making them takes a second, a Ray cluster several)."""
    reason = netns.supported()
    if reason:
        pytest.skip(reason)
    network = netns.Network.create(["head", "w1"])
    yield network
    network.close()


