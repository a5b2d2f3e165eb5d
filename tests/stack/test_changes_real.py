"""Planned changes cost the clients nothing: real supervisord, the real gateway and watchdog, and two real
HTTP replicas of one model (tests.gateway.upstream, which cut their streams at once on SIGTERM, as a
server that does not drain would). Clients stream through the gateway non-stop while `restart`, `stop`
and `up` after an edit change the replicas; every stream must arrive whole."""

from __future__ import annotations

import json
import re
import sys
import threading
import time

import httpx
import psutil
import pytest

from tests.support.engine_envs import REPO
from tests.support.lifecycle import force_down, run
from tests.support.ports import free_ports
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real supervisord and real servers

CHUNKS = 20


def replica(name: str, port: int, stamp: str) -> str:
    return f'''
[[program]]
name = "{name}"
command = ["{sys.executable}", "-m", "tests.gateway.upstream", "--port", "{port}", "--name", "{name}",
           "--graceful-s", "0"]
directory = "{REPO}"
health = "http://127.0.0.1:{port}/health"
serves = {{ model = "chat", task = "chat", url = "http://127.0.0.1:{port}" }}
startsecs = 1
environment = {{ STAMP = "{stamp}" }}
'''


class Streams:
    """Clients streaming chat completions through the gateway back to back; counts what arrived whole."""

    def __init__(self, url: str, clients: int = 4):
        self.url = url
        self.whole, self.failures, self.served_by = 0, [], {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(clients)]

    def _one(self, client: httpx.Client) -> None:
        body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}],
                "x_chunks": CHUNKS, "x_interval_s": 0.03}
        tokens, done, server = [], False, None
        with client.stream("POST", f"{self.url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                raise AssertionError(f"status {response.status_code}: {response.read()[:300]!r}")
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise AssertionError(f"error event: {chunk['error']['message']}")
                    server = chunk.get("served_by", server)
                    tokens.append(chunk["choices"][0]["delta"].get("content") or "")
        if not done or "".join(tokens) != "".join(f"tok{i} " for i in range(CHUNKS)):
            raise AssertionError(f"cut short: {''.join(tokens)!r} done={done}")
        self.whole += 1
        self.served_by[server] = self.served_by.get(server, 0) + 1

    def _work(self) -> None:
        with httpx.Client(trust_env=False, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    self._one(client)
                except (httpx.HTTPError, AssertionError) as error:
                    self.failures.append(repr(error)[:300])

    def __enter__(self) -> "Streams":
        for thread in self._threads:
            thread.start()
        wait_for(lambda: self.whole >= 8, 30, what="streams flowing")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="bm-ch-", dir="/tmp"))
    gateway, a, b, metrics = free_ports(4)

    def write(stamp: str) -> None:
        (folder / "baremetal.toml").write_text(f'''
[stack]
name = "changes"
root = "state"
[api]
port = {gateway}
[watchdog]
metrics_port = {metrics}
{replica("up-a", a, stamp)}{replica("up-b", b, stamp)}''')

    write("1")
    config = folder / "baremetal.toml"
    result = run("up", "--timeout", "90s", "-c", str(config))
    assert result.exit_code == 0, result.output
    state = folder / "state"
    yield config, state, write, f"http://127.0.0.1:{gateway}"
    run("down", "-c", str(config))
    force_down(state)
    shutil.rmtree(folder, ignore_errors=True)


def gateway_json(state) -> dict:
    return json.loads((state / "run" / "gateway.json").read_text())


def watchdog_entry(state, program: str) -> dict:
    return json.loads((state / "run" / "watchdog.json").read_text())["programs"][program]


def environ(state, program: str) -> dict:
    from baremetal.supervisord.client import SupervisorClient

    return psutil.Process(SupervisorClient(state / "run" / "supervisor.sock").process(program).pid).environ()


def test_the_gateway_publishes_requests_in_flight_per_backend(replicas):
    config, state, _write, url = replicas
    document = wait_for(lambda: (lambda d: d if set(d["backends"]) == {"up-a", "up-b"} else None)(gateway_json(state)),
                        10, what="gateway.json with both backends")
    assert document["models"] == {"chat": {"held": 0}}
    assert all(entry["in_flight"] == 0 and entry["oldest_wait_s"] == 0 and entry["model"] == "chat"
               for entry in document["backends"].values())
    slow = threading.Thread(target=lambda: httpx.post(f"{url}/v1/chat/completions", trust_env=False, timeout=30, json={
        "model": "chat", "messages": [{"role": "user", "content": "hi"}], "x_delay_s": 3}))
    sent = time.time()
    slow.start()
    busy = wait_for(lambda: next((entry for entry in gateway_json(state)["backends"].values()
                                  if entry["in_flight"] == 1 and entry["oldest_wait_s"] >= 1.5), None), 10,
                    what="a whole request waiting without a byte")
    assert sent - 1 <= busy["busy_since_s"] <= sent + 1 and busy["last_request_s"] >= busy["busy_since_s"]
    slow.join(30)
    after = wait_for(lambda: (lambda d: d if all(e["in_flight"] == 0 for e in d["backends"].values()) else None)(
        gateway_json(state)), 5, what="in flight back to 0")
    assert max(entry["last_byte_s"] or 0 for entry in after["backends"].values()) >= sent + 2.5
    idle = gateway_json(state)["updated_s"]
    wait_for(lambda: gateway_json(state)["updated_s"] > idle, 7, what="an idle gateway still writing")


def test_restart_drains_a_replica_and_every_stream_arrives_whole(replicas):
    config, state, _write, url = replicas
    with Streams(url) as streams:
        result = run("restart", "up-a", "-c", str(config))
        time.sleep(1.0)                         # more streams after it is back
    assert result.exit_code == 0, result.output
    assert "draining up-a before its restart: no new requests (they go to up-b)" in result.output
    assert "drained up-a in" in result.output and "request(s) in flight finished" in result.output
    assert streams.failures == [] and streams.whole > 20, (streams.failures[:3], result.output)
    metrics = httpx.get(f"{url}/metrics", trust_env=False).text
    assert 'baremetal_gateway_drained_total{model="chat",backend="up-a"}' in metrics
    # An operator's restart is not the watchdog's: its budget is whole, and its events say who did it.
    entry = wait_for(lambda: (lambda e: e if e["phase"] == "ready" else None)(watchdog_entry(state, "up-a")), 15,
                     what="up-a ready for the watchdog")
    assert entry["restarts"] == 0 and entry["restart_times_s"] == []
    events = [json.loads(line) for line in (state / "logs" / "events.jsonl").read_text().splitlines()]
    planned = [e for e in events if e["kind"] == "planned" and e["program"] == "up-a"]
    assert planned and "`baremetal restart` by an operator" in planned[-1]["message"]
    assert not [e for e in events if e["program"] == "up-a" and e["kind"] in ("failed", "restart")]
    drain = json.loads((state / "run" / "drain.json").read_text())
    assert drain["programs"] == {} and drain["changes"]["up-a"]["done_s"] is not None


def test_up_after_an_edit_changes_replicas_one_at_a_time(replicas):
    config, state, write, url = replicas
    before = {name: environ(state, name)["STAMP"] for name in ("up-a", "up-b")}
    write("2")
    with Streams(url) as streams:
        result = run("up", "--timeout", "60s", "-c", str(config))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "changed (restarted): up-a, up-b" in out
    # up-b is drained only once up-a serves again.
    ready_a = re.search(r"^  up-a +ready \(", out, re.MULTILINE)
    assert ready_a and out.index("draining up-a") < ready_a.start() < out.index("draining up-b"), out
    assert streams.failures == [] and streams.whole > 20, (streams.failures[:3], out)
    assert before == {"up-a": "1", "up-b": "1"}
    assert {name: environ(state, name)["STAMP"] for name in ("up-a", "up-b")} == {"up-a": "2", "up-b": "2"}
    for name in ("up-a", "up-b"):
        entry = wait_for(lambda n=name: (lambda e: e if e["phase"] == "ready" else None)(watchdog_entry(state, n)), 15,
                         what=f"{name} ready for the watchdog")
        assert entry["restarts"] == 0


def test_stop_drains_then_the_other_replica_takes_everything(replicas):
    config, state, _write, url = replicas
    with Streams(url) as streams:
        result = run("stop", "up-b", "-c", str(config))
        assert result.exit_code == 0, result.output
        served = dict(streams.served_by)
        wait_for(lambda: streams.whole > sum(served.values()) + 8, 20, what="streams after the stop")
        assert streams.served_by.get("up-b") == served.get("up-b")      # nothing more went to up-b
    assert "drained up-b in" in result.output and "stopped up-b" in result.output
    assert streams.failures == []
    status = json.loads(run("status", "--json", "-c", str(config)).stdout)
    assert {row["name"]: row["state"] for row in status["programs"]}["up-b"] == "STOPPED"
    assert run("start", "up-b", "-c", str(config)).exit_code == 0
