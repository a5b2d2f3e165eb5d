"""The standard-library probe client against a real HTTP server, and through the real probes."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import pytest

from baremetal.plan.spec import Probe
from baremetal.stack.http_client import LiteClient
from baremetal.stack.probes import probe
from tests.support.ports import free_port


@pytest.fixture
def server():
    """A real server: echoes method, path, Authorization and the JSON body; /slow sleeps 2 s."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path == "/slow":
                time.sleep(2)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            data = json.dumps({"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"),
                               "json": json.loads(body) if body else None}).encode()
            self.send_response(404 if self.path == "/missing" else 200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_get_and_post_json_with_headers(server):
    client = LiteClient()
    got = client.get(f"{server}/health?x=1", timeout=2)
    assert got.status_code == 200 and got.json()["path"] == "/health?x=1" and got.json()["method"] == "GET"
    posted = client.post(f"{server}/v1/embeddings", timeout=2, json={"input": "ping"},
                         headers={"Authorization": "Bearer k"})
    assert posted.json() == {"method": "POST", "path": "/v1/embeddings", "auth": "Bearer k",
                             "json": {"input": "ping"}}
    assert client.post(f"{server}/list_models", timeout=2).json()["json"] is None


def test_probes_read_failures_from_it(server):
    client = LiteClient()
    assert probe(Probe("http", f"{server}/health"), client).ok
    missing = probe(Probe("http", f"{server}/missing"), client)
    assert not missing.ok and missing.status_code == 404
    slow = probe(Probe("http", f"{server}/slow"), client, timeout_s=0.2)
    assert not slow.ok and "no answer within the probe timeout" in slow.detail
    refused = probe(Probe("http", f"http://127.0.0.1:{free_port()}/health"), client)
    assert not refused.ok and "connection refused" in refused.detail
    with socket.socket() as silent:      # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hung = probe(Probe("http", f"http://127.0.0.1:{silent.getsockname()[1]}/"), client, timeout_s=0.2)
    assert not hung.ok and "timeout" in hung.detail
    api = probe(Probe("openai", server), client, api_key="secret")
    assert api.ok
