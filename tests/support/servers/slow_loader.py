"""A program that loads slowly but visibly, like an engine reading its weights: for --load-seconds it reads a
file in chunks and prints a progress line now and then, and only then listens; /health answers 200.

    python tests/support/servers/slow_loader.py --port 8123 --load-seconds 14 --weights FILE
"""

from __future__ import annotations

import argparse
import http.server
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--load-seconds", type=float, required=True)
    parser.add_argument("--weights", required=True, help="a file to read over and over while loading")
    parser.add_argument("--quiet", action="store_true", help="read, but print nothing while loading")
    options = parser.parse_args()
    started = time.monotonic()
    shard = 0
    while time.monotonic() - started < options.load_seconds:
        with open(options.weights, "rb") as weights:
            while weights.read(1 << 20):
                time.sleep(0.05)
        shard += 1
        if not options.quiet and shard % 3 == 0:
            print(f"loaded shard {shard}", flush=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", options.port), Handler)
    print(f"listening on 127.0.0.1:{options.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
