"""Settings the gateway and the watchdog read at run time take effect at `up`: a rotated key, a new model,
[watchdog] edits, api.port. Real supervisord, the real gateway and a real upstream, driven by the CLI;
a streamed request in flight while the gateway reloads must finish whole."""

from __future__ import annotations

import sys
import threading

import httpx
import pytest

from tests.support.engine_envs import REPO
from tests.support.lifecycle import force_down, programs_by_name, run
from tests.support.ports import free_ports
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real supervisord, gateway and upstream


def _program(name: str, port: int) -> str:
    return f'''
[[program]]
name = "up-{name}"
command = ["{sys.executable}", "-m", "tests.gateway.upstream", "--port", "{port}", "--name", "up-{name}"]
directory = "{REPO}"
health = "http://127.0.0.1:{port}/health"
serves = {{ model = "{name}", task = "chat", url = "http://127.0.0.1:{port}" }}
'''


def _stack(api_port: int, metrics_port: int, keys: str, programs: str, interval: str = "1s") -> str:
    return f'''
[stack]
name = "reload"
root = "state"
[api]
port = {api_port}
api_keys = ["file:{keys}"]
[watchdog]
interval = "{interval}"
metrics_port = {metrics_port}
{programs}'''


def _chat(port: int, key: str, model: str = "a") -> int:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=10).status_code


@pytest.fixture
def stack(short_tmp):
    config = short_tmp / "baremetal.toml"
    yield config
    if (short_tmp / "state" / "run" / "supervisord.pid").exists():
        run("down", "-c", str(config))
    force_down(short_tmp / "state")


def test_up_applies_keys_models_and_watchdog_settings_without_dropping_a_stream(stack, short_tmp):
    api_port, metrics_port, port_a, port_b, new_api_port = free_ports(5)
    keys = short_tmp / "keys"
    keys.write_text("old-key-1\n")
    stack.write_text(_stack(api_port, metrics_port, keys, _program("a", port_a)))
    first = run("up", "--timeout", "60s", "-c", str(stack))
    assert first.exit_code == 0, first.output
    before = {name: row["pid"] for name, row in programs_by_name(stack).items()}
    assert _chat(api_port, "old-key-1") == 200

    # A stream in flight, slow enough to be running while the gateway reloads.
    chunks: list[str] = []
    opened = threading.Event()

    def stream() -> None:
        body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                "x_chunks": 25, "x_interval_s": 0.2}
        with httpx.stream("POST", f"http://127.0.0.1:{api_port}/v1/chat/completions", json=body, timeout=30,
                          headers={"Authorization": "Bearer old-key-1"}) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    chunks.append(line[6:])
                    opened.set()

    streaming = threading.Thread(target=stream)
    streaming.start()
    assert opened.wait(15)

    keys.write_text("new-key-2\n")                                  # rotated in the key file alone
    stale = run("status", "-c", str(stack))
    assert stale.exit_code == 1, stale.output
    assert "runs with older settings than the stack file" in stale.output.split("\napi: ")[1], stale.output

    stack.write_text(_stack(api_port, metrics_port, keys, _program("a", port_a) + _program("b", port_b),
                            interval="2s"))
    applied = run("up", "--timeout", "60s", "-c", str(stack))
    assert applied.exit_code == 0, applied.output
    assert "api: took the new settings (keys, models, limits) without a restart" in applied.output
    assert "watchdog: its settings changed: restarting it" in applied.output
    assert "added: up-b" in applied.output and "changed (restarted): watchdog" in applied.output
    after = {name: row["pid"] for name, row in programs_by_name(stack).items()}
    assert after["api"] == before["api"] and after["up-a"] == before["up-a"]
    assert after["watchdog"] != before["watchdog"]

    streaming.join(30)
    assert chunks[-1] == "[DONE]" and sum('"tok' in chunk for chunk in chunks) == 25     # whole, no error event
    assert _chat(api_port, "old-key-1") == 401                                          # revoked: refused
    assert _chat(api_port, "new-key-2") == 200 and _chat(api_port, "new-key-2", "b") == 200
    fresh = run("status", "-c", str(stack))
    assert fresh.exit_code == 0, fresh.output
    again = run("up", "-c", str(stack))
    assert again.exit_code == 0 and "nothing changed: no program restarted" in again.output

    stack.write_text(_stack(new_api_port, metrics_port, keys, _program("a", port_a) + _program("b", port_b),
                            interval="2s"))
    moved = run("up", "--timeout", "60s", "-c", str(stack))
    assert moved.exit_code == 0 and "changed (restarted): api" in moved.output, moved.output
    assert _chat(new_api_port, "new-key-2") == 200
    with pytest.raises(httpx.ConnectError):
        _chat(api_port, "new-key-2")
    wait_for(lambda: run("status", "-c", str(stack)).exit_code == 0, 20, what="status all good")
