"""A real Ray driver spanning nodes, for cluster tests: what vLLM on Ray's executor does, minus the model.

    python ray_driver.py --port 8600 --gpus 2

Runs in the cluster's Ray env (stdlib + ray). Connects to RAY_ADDRESS (token from RAY_AUTH_TOKEN_PATH),
reserves --gpus bundles of one GPU on distinct nodes (a STRICT_SPREAD placement group, as tensor/pipeline
ranks spread over nodes), starts one actor per bundle, and serves /health on 127.0.0.1: 200 with the
actors' node addresses when every actor answers within 2 s, 503 otherwise. Like a vLLM whose node is
lost, it does not exit by itself when an actor's node dies.
"""

import argparse
import http.server
import json
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gpus", type=int, default=2)
    options = parser.parse_args()
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(logging_level="ERROR", log_to_driver=False)
    group = placement_group([{"GPU": 1, "CPU": 0.01}] * options.gpus, strategy="STRICT_SPREAD")
    ray.get(group.ready(), timeout=60)

    @ray.remote(num_gpus=1, num_cpus=0.01)
    class Rank:
        def where(self) -> str:
            return ray.util.get_node_ip_address()

    ranks = [Rank.options(scheduling_strategy=PlacementGroupSchedulingStrategy(group, index)).remote()
             for index in range(options.gpus)]
    print(f"ranks on {ray.get([rank.where.remote() for rank in ranks], timeout=60)}", flush=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            try:
                body, code = {"nodes": ray.get([rank.where.remote() for rank in ranks], timeout=2)}, 200
            except Exception as error:  # noqa: BLE001 - a lost rank is the point of the test
                body, code = {"error": f"{type(error).__name__}: {str(error)[:200]}"}, 503
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", options.port), Handler)
    print(f"serving on 127.0.0.1:{options.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
