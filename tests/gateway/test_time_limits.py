"""The gateway's time limits against real sockets: slowloris clients, a connection flood, a hung backend
(SIGSTOPped), a backend whose accept queue is full, and a long stream that must not be cut.

The gateway runs as `baremetal gateway` (its own process, as supervisord would start it) in front of
real upstream servers (tests.gateway.upstream); every wait is bounded. Holding and re-sends are off
(hold_timeout "0s", migration_limit 0) so that each limit shows alone: with them on, a request that
meets a limit goes to another replica or waits for one (tests/gateway/test_gateway_faults.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.engine_envs import REPO
from tests.support.ports import free_ports
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real gateway and upstream processes

KEY = "limits-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def _upstream(port: int, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.gateway.upstream", "--port", str(port), "--name", name],
                            cwd=REPO)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    ports = dict(zip(("gateway", "live", "hung", "full"), free_ports(4)))
    full = socket.socket()                      # listens, never accepts: once its queue is full, SYNs go unanswered
    full.bind(("127.0.0.1", ports["full"]))
    full.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.settimeout(0.3)
        try:
            filler.connect(("127.0.0.1", ports["full"]))
        except OSError:
            pass
        fillers.append(filler)
    programs = "".join(f'''
[[program]]
name = "up-{name}"
command = ["sleep", "1"]
serves = {{ model = "{name}", task = "chat", url = "http://127.0.0.1:{ports[name]}" }}
''' for name in ("live", "hung", "full"))
    stack_file = root / "baremetal.toml"
    stack_file.write_text(f'''
[stack]
name = "limits"
[api]
port = {ports["gateway"]}
api_keys = ["{KEY}"]
client_timeout = "1s"
max_connections = 60
backend_connect_timeout = "1s"
backend_idle_timeout = "1s"
hold_timeout = "0s"
migration_limit = 0
[watchdog]
enabled = false
{programs}''')
    upstreams = {name: _upstream(ports[name], name) for name in ("live", "hung")}
    server = subprocess.Popen([sys.executable, "-m", "baremetal", "gateway", "-c", str(stack_file)], cwd=REPO)
    url = f"http://127.0.0.1:{ports['gateway']}"
    try:
        for port in (ports["live"], ports["hung"], ports["gateway"]):
            wait_for(lambda port=port: _answers(f"http://127.0.0.1:{port}/health"), 30, what=f"port {port} serving")
        yield {"url": url, "port": ports["gateway"], "upstreams": upstreams}
    finally:
        for process in [server, *upstreams.values()]:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(timeout=10)
        for sock in [full, *fillers]:
            sock.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _read_until_closed(sock: socket.socket, deadline_s: float) -> bytes:
    """Everything the server sends until it closes the connection; fails past the deadline."""
    data = b""
    while True:
        sock.settimeout(max(0.01, deadline_s - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"the gateway kept the connection open past the deadline (got {data[:80]!r})")
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def test_slowloris_connections_are_cut_and_real_clients_get_through(gateway):
    started = time.monotonic()
    slow = []
    for index in range(50):
        sock = _connect(gateway["port"])
        if index % 2:      # half send part of their headers, the others nothing at all
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: appl")
        slow.append(sock)
    reply = httpx.post(gateway["url"] + "/v1/chat/completions", json={"model": "live", **CHAT}, headers=HEADERS,
                       timeout=5)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "Hello there."
    answers = [_read_until_closed(sock, started + 6) for sock in slow]
    assert time.monotonic() - started < 6
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), {a[:40] for a in answers}
    assert b"did not arrive within 1s" in answers[0]
    for sock in slow:
        sock.close()


def test_a_body_that_stops_coming_is_cut(gateway):
    sock = _connect(gateway["port"])
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer " + KEY.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ")
    started = time.monotonic()
    answer = _read_until_closed(sock, started + 5)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5
    sock.close()


def test_connections_over_the_cap_are_refused_at_once(gateway):
    socks = [_connect(gateway["port"]) for _ in range(75)]
    started = time.monotonic()
    answers = [_read_until_closed(sock, started + 6) for sock in socks]
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    assert len(refused) >= 15 and b"limit of 60 open connections" in refused[0]
    assert all(a.startswith(b"HTTP/1.1 503") or a.startswith(b"HTTP/1.1 408") for a in answers)
    for sock in socks:
        sock.close()


def test_a_hung_backend_answers_504_instead_of_holding_the_client(gateway):
    hung = gateway["upstreams"]["hung"]
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        reply = httpx.post(gateway["url"] + "/v1/chat/completions", json={"model": "hung", **CHAT}, headers=HEADERS,
                           timeout=30)
        took_s = time.monotonic() - started
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    assert reply.status_code == 504, reply.text
    assert "nothing received for 1s" in reply.json()["error"]["message"] and took_s < 5


def test_a_stream_whose_backend_hangs_ends_with_an_error_event(gateway):
    hung = gateway["upstreams"]["hung"]
    body = {"model": "hung", **CHAT, "stream": True, "x_chunks": 100, "x_interval_s": 0.1}
    events = []
    with httpx.stream("POST", gateway["url"] + "/v1/chat/completions", json=body, headers=HEADERS,
                      timeout=30) as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                events.append(line[6:])
            if len(events) == 3:
                os.kill(hung.pid, signal.SIGSTOP)
                stopped_s = time.monotonic()
                break
        try:
            events += [line[6:] for line in lines if line.startswith("data: ")]
            ended_s = time.monotonic()
        finally:
            os.kill(hung.pid, signal.SIGCONT)
    assert events[-1] == "[DONE]" and ended_s - stopped_s < 5
    error = json.loads(events[-2])["error"]
    assert "failed mid-stream" in error["message"] and "nothing received for 1s" in error["message"]


def test_a_long_stream_that_keeps_sending_is_not_cut(gateway):
    body = {"model": "live", **CHAT, "stream": True, "x_chunks": 10, "x_interval_s": 0.35}
    started = time.monotonic()
    with httpx.stream("POST", gateway["url"] + "/v1/chat/completions", json=body, headers=HEADERS,
                      timeout=30) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert time.monotonic() - started > 3          # three times the idle timeout, and it went through
    assert events[-1] == "[DONE]" and sum('"tok' in event for event in events) == 10


def test_a_backend_that_does_not_take_the_connection_is_given_up_after_the_connect_timeout(gateway):
    started = time.monotonic()
    reply = httpx.post(gateway["url"] + "/v1/chat/completions", json={"model": "full", **CHAT}, headers=HEADERS,
                       timeout=30)
    assert reply.status_code == 503 and time.monotonic() - started < 5
    assert "up-full: no connection within 1s" in reply.json()["error"]["message"]
