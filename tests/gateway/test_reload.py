"""SIGHUP reloads: the gateway takes a valid stack file's keys and routes, keeps its settings when the new
file is invalid, and says which in its settings record (never the keys themselves)."""

from __future__ import annotations

import asyncio
import json

from baremetal.config import load_stack
from baremetal.gateway.app import Gateway
from baremetal.gateway.keys import key_table
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
    gateway = Gateway(load_stack(path), key_table(load_stack(path).api))
    path.write_text(STACK.format(key="new-key-2", timeout="3s", model="b"))
    asyncio.run(reload(gateway))
    assert gateway.keys.identify("Bearer new-key-2") and not gateway.keys.identify("Bearer old-key-1")
    assert list(gateway.routes) == ["b"]
    assert gateway.limits.client_timeout_s == 3.0
    record = read_published(gateway.stack, "api")
    assert record is not None and record.error is None
    text = settings_path(gateway.stack, "api").read_text()
    assert "new-key-2" not in text and "old-key-1" not in text
    assert settings_path(gateway.stack, "api").stat().st_mode & 0o777 == 0o600


def test_an_invalid_stack_file_keeps_the_previous_settings_and_says_why(write_stack, monkeypatch):
    monkeypatch.setenv("SUPERVISOR_PROCESS_NAME", "api")
    path = write_stack(STACK.format(key="old-key-1", timeout="10s", model="a"))
    gateway = Gateway(load_stack(path), key_table(load_stack(path).api))
    path.write_text(STACK.format(key="new-key-2", timeout="soon", model="b"))
    asyncio.run(reload(gateway))
    assert gateway.keys.identify("Bearer old-key-1") and list(gateway.routes) == ["a"]
    record = json.loads(settings_path(gateway.stack, "api").read_text())
    assert "reload refused, the previous settings stay" in record["error"] and "api.client_timeout" in record["error"]


def test_a_gateway_run_by_hand_speaks_for_nobody(write_stack, monkeypatch):
    monkeypatch.delenv("SUPERVISOR_PROCESS_NAME", raising=False)
    path = write_stack(STACK.format(key="k", timeout="10s", model="a"))
    gateway = Gateway(load_stack(path), key_table(load_stack(path).api))
    asyncio.run(reload(gateway))
    assert not settings_path(gateway.stack, "api").exists()


NAMED = STACK + '''
[[api.key]]
name = "team-a"
key = "file:{key_file}"
requests_per_minute = {rpm}
'''


def test_named_keys_reload_and_the_record_matches_what_up_expects(write_stack, monkeypatch, tmp_path):
    """A rotated [[api.key]] file and a new limit are taken on SIGHUP; the limiter's counts, kept by name,
    stay; the published digest is the one `up` computes from the stack file (so it sees "current")."""
    from baremetal.gateway.keys import KeyIdentity
    from baremetal.plan.pipeline import known_specs
    from baremetal.stack.refresh import expected_digests, keys_here

    monkeypatch.setenv("SUPERVISOR_PROCESS_NAME", "api")
    key_file = tmp_path / "team-a.key"
    key_file.write_text("team-a-key-1\n")
    path = write_stack(NAMED.format(key="ops-key-1", timeout="10s", model="a", key_file=key_file, rpm=5))
    gateway = Gateway(load_stack(path), key_table(load_stack(path).api))
    first = gateway.keys.identify("Bearer team-a-key-1")
    assert first == KeyIdentity("team-a", requests_per_minute=5)
    assert gateway.limiter.admit(first) is None
    key_file.write_text("team-a-key-2\n")
    path.write_text(NAMED.format(key="ops-key-1", timeout="10s", model="a", key_file=key_file, rpm=1))
    asyncio.run(reload(gateway))
    again = gateway.keys.identify("Bearer team-a-key-2")
    assert again is not None and again.requests_per_minute == 1 and not gateway.keys.identify("Bearer team-a-key-1")
    assert gateway.limiter.admit(again) is not None        # the request before the reload counts
    stack = load_stack(path)
    expected = expected_digests(stack, known_specs(stack), keys_here(stack))
    assert read_published(gateway.stack, "api").digest == expected["api"]
    assert "team-a-key" not in settings_path(gateway.stack, "api").read_text()


def test_a_worker_process_speaks_for_its_parent(write_stack, monkeypatch, tmp_path):
    """With api.workers > 1 supervisord knows the parent: each worker's record carries the parent's pid."""
    import os

    monkeypatch.setenv("SUPERVISOR_PROCESS_NAME", "api")
    path = write_stack(STACK.format(key="k", timeout="10s", model="a"))
    gateway = Gateway(load_stack(path), key_table(load_stack(path).api), worker=(0, tmp_path))
    asyncio.run(reload(gateway))
    assert read_published(gateway.stack, "api").pid == os.getppid()
