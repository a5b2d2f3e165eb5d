"""A local model hub for pull tests: serves files the test made under the API paths that huggingface_hub
and modelscope call (no hub is reachable from here). Logs every request so tests can assert what was
fetched (e.g. nothing on a second pull)."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Hub:
    repo_id: str
    files: dict[str, bytes]
    requests: list[tuple[str, str]] = field(default_factory=list)     # (method, path)

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    def file_gets(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path
                or method == "GET" and "FilePath=" in path]


def _handler(hub: Hub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict | None = None, head: bool = False) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, value, status: int = 200) -> None:
            self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

        def _route(self, head: bool) -> None:
            hub.requests.append(("HEAD" if head else "GET", self.path))
            url = urlparse(self.path)
            path = unquote(url.path)
            query = parse_qs(url.query)
            repo = hub.repo_id
            if path.startswith(f"/api/models/{repo}/revision/") or path == f"/api/models/{repo}":
                return self._json({"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                                   "siblings": [{"rfilename": name} for name in hub.files]})
            if path.startswith(f"/api/models/{repo}/tree/"):
                return self._json([{"type": "file", "path": name, "size": len(data), "oid": self._etag(name)}
                                   for name, data in hub.files.items()])
            if path.startswith(f"/{repo}/resolve/"):
                name = path.split("/resolve/", 1)[1].split("/", 1)[1]
                return self._file(name, head)
            if path.startswith(f"/api/v1/models/{repo}"):
                return self._modelscope(path[len(f"/api/v1/models/{repo}"):], query, head)
            if path.startswith("/api/models/"):            # as the Hub answers for a repo it does not have
                return self._send(404, b'{"error": "Repository not found"}',
                                  {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"}, head)
            self._json({"error": f"not found: {path}"}, 404)

        @staticmethod
        def _etag(name: str) -> str:
            return hashlib.sha1(hub.files[name]).hexdigest()

        def _file(self, name: str, head: bool) -> None:
            if name not in hub.files:
                return self._json({"error": "Entry not found"}, 404)
            data = hub.files[name]
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{self._etag(name)}"',
                       "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            ranged = self.headers.get("Range")
            if ranged and ranged.startswith("bytes="):
                start = int(ranged[6:].split("-")[0])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(206, data[start:], headers, head)
            self._send(200, data, headers, head)

        def _modelscope(self, rest: str, query: dict, head: bool) -> None:
            if rest in ("", "/"):
                return self._json({"Code": 200, "Success": True, "Data": {"Name": hub.repo_id.split("/")[-1]}})
            if rest == "/revisions":
                return self._json({"Code": 200, "Success": True, "Data": {"RevisionMap": {
                    "Tags": [], "Branches": [{"Revision": "master", "CreatedAt": 0}]}}})
            if rest == "/repo/files":
                files = [{"Name": name.split("/")[-1], "Path": name, "Type": "blob", "Size": len(data),
                          "Revision": COMMIT, "Sha256": hub.sha256(name), "IsLFS": False}
                         for name, data in hub.files.items()]
                return self._json({"Code": 200, "Success": True, "Data": {"Files": files}})
            if rest == "/repo":
                return self._file(query.get("FilePath", [""])[0], head)
            self._json({"Code": 404, "Message": f"not found: {rest}"}, 404)

    return Handler


class HubServer:
    """Runs a Hub on 127.0.0.1 in a thread; `url` is the endpoint to point the client at."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
