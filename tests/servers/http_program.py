"""A small real HTTP server to supervise in tests: it can load slowly, or exit after a while.

    python -m tests.servers.http_program PORT [--load-s S] [--exit-after-s S] [--exit-status N]

GET /health answers 200 once loaded; it is a real process under real supervisord, so SIGSTOP, SIGTERM
and restarts act on it as they would on any server.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002
        sys.stdout.write("%s %s\n" % (self.address_string(), format % args))
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--load-s", type=float, default=0.0)
    parser.add_argument("--exit-after-s", type=float, default=None)
    parser.add_argument("--exit-status", type=int, default=3)
    args = parser.parse_args()
    print(f"loading for {args.load_s}s", flush=True)
    time.sleep(args.load_s)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"serving on {args.port}", flush=True)
    if args.exit_after_s is not None:
        def leave() -> None:
            time.sleep(args.exit_after_s)
            print(f"exiting with status {args.exit_status}", flush=True)
            sys.stdout.flush()
            import os
            os._exit(args.exit_status)
        threading.Thread(target=leave, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
