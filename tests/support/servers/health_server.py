"""A tiny real HTTP server for lifecycle tests: /health answers 503 until --ready-after seconds have
passed since start, then 200. Logs one line per request to stderr, like most servers.

    python tests/servers/health_server.py --port 8123 [--ready-after 3] [--exit-after 5] [--spawn-child]
                                          [--ignore-term]
"""

from __future__ import annotations

import argparse
import http.server
import subprocess
import sys
import threading
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready-after", type=float, default=0.0)
    parser.add_argument("--exit-after", type=float, default=None, help="crash (exit 1) after this many seconds")
    parser.add_argument("--spawn-child", action="store_true", help="start a grandchild that sleeps, as vLLM's "
                        "engine core is a child of its API server")
    parser.add_argument("--spawn-escaper", action="store_true", help="start a grandchild in its own session, "
                        "out of reach of supervisord's stopasgroup")
    parser.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM, as vLLM under load was seen "
                        "to: only supervisord's SIGKILL after stopwaitsecs ends it")
    options = parser.parse_args()
    if options.ignore_term:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    started = time.monotonic()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            ready = time.monotonic() - started >= options.ready_after
            code = 200 if ready or self.path != "/health" else 503
            body = b'{"status": "ok"}' if code == 200 else b'{"status": "loading"}'
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", options.port), Handler)
    print(f"listening on 127.0.0.1:{options.port}", flush=True)
    if options.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"child pid {child.pid}", flush=True)
    if options.spawn_escaper:
        escaper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        print(f"escaper pid {escaper.pid}", flush=True)
    if options.exit_after is not None:
        def crash() -> None:
            time.sleep(options.exit_after)
            print("crashing on purpose", file=sys.stderr, flush=True)
            import os
            os._exit(1)

        threading.Thread(target=crash, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
