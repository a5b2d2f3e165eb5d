"""SIGHUP reloads: the gateway takes a valid stack file's keys and routes, keeps its settings when the new
file is invalid, and says which in its settings record (never the keys themselves)."""

from __future__ import annotations

import asyncio
import json

from baremetal.config import load_stack
from baremetal.gateway.app import Gateway
from baremetal.gateway.reload import reload
from baremetal.stack.settings import read_published, settings_path

STACK = '''
[stack]
name = "r"
root = "state"
[api]
api_keys = ["{key}"]
client_timeout = "{timeout}"
[watchdog]
enabled = false
[[program]]
name = "up-{model}"
command = ["sleep", "1"]
serves = {{ model = "{model}", task = "chat", url = "http://127.0.0.1:9" }}
'''


def test_reload_takes_new_keys_routes_and_limits(write_stack, monkeypatch):
    monkeypatch.setenv("SUPERVISOR_PROCESS_NAME", "api")
    path = write_stack(STACK.format(key="old-key-1", timeout="10s", model="a"))
    gateway = Gateway(load_stack(path), ["old-key-1"])
    path.write_text(STACK.format(key="new-key-2", timeout="3s", model="b"))
    asyncio.run(reload(gateway))
    assert gateway.keys == ["new-key-2"] and list(gateway.routes) == ["b"]
    assert gateway.limits.client_timeout_s == 3.0
    record = read_published(gateway.stack, "api")
    assert record is not None and record.error is None
    text = settings_path(gateway.stack, "api").read_text()
    assert "new-key-2" not in text and "old-key-1" not in text
    assert settings_path(gateway.stack, "api").stat().st_mode & 0o777 == 0o600


def test_an_invalid_stack_file_keeps_the_previous_settings_and_says_why(write_stack, monkeypatch):
    monkeypatch.setenv("SUPERVISOR_PROCESS_NAME", "api")
    path = write_stack(STACK.format(key="old-key-1", timeout="10s", model="a"))
    gateway = Gateway(load_stack(path), ["old-key-1"])
    path.write_text(STACK.format(key="new-key-2", timeout="soon", model="b"))
    asyncio.run(reload(gateway))
    assert gateway.keys == ["old-key-1"] and list(gateway.routes) == ["a"]
    record = json.loads(settings_path(gateway.stack, "api").read_text())
    assert "reload refused, the previous settings stay" in record["error"] and "api.client_timeout" in record["error"]


def test_a_gateway_run_by_hand_speaks_for_nobody(write_stack, monkeypatch):
    monkeypatch.delenv("SUPERVISOR_PROCESS_NAME", raising=False)
    path = write_stack(STACK.format(key="k", timeout="10s", model="a"))
    gateway = Gateway(load_stack(path), ["k"])
    asyncio.run(reload(gateway))
    assert not settings_path(gateway.stack, "api").exists()
