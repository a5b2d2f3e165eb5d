"""Wait until the Ray cluster has N GPUs free; exit 0 then. Runs in the cluster's Ray env (stdlib + ray).

    python ray_wait.py --gpus N [--interval S]

Connects to RAY_ADDRESS with the token named by RAY_AUTH_TOKEN_PATH (both in the environment). Retries
for ever while the head is unreachable; says what it waits for when that changes, and every minute.
"""

import argparse
import sys
import time

REPORT_EVERY_S = 60.0


def free_gpus(ray) -> tuple[float, int]:
    """(GPUs free in the cluster, alive nodes)."""
    free = ray.available_resources().get("GPU", 0.0)
    alive = sum(1 for node in ray.nodes() if node.get("Alive"))
    return free, alive


def main() -> None:
    """Wait, retrying through a head that is down; return once the GPUs are free."""
    parser = argparse.ArgumentParser(prog="ray_wait.py")
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--interval", type=float, default=1.0)
    options = parser.parse_args()
    import ray

    connected = False
    last_said, said_at = None, 0.0
    while True:
        try:
            if not connected:
                ray.init(logging_level="ERROR", log_to_driver=False, configure_logging=False)
                connected = True
            free, alive = free_gpus(ray)
            if free >= options.gpus:
                ray.shutdown()
                return
            message = f"waiting for {options.gpus} free GPU(s): the cluster has {free:g} on {alive} node(s)"
        except Exception as error:  # noqa: BLE001 - the head may be down or restarting: keep trying
            message = f"waiting for the Ray head: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
            if connected:
                ray.shutdown()
                connected = False
        now = time.monotonic()
        if message != last_said or now - said_at >= REPORT_EVERY_S:
            print(f"ray_wait: {message}", flush=True)
            last_said, said_at = message, now
        time.sleep(options.interval)


if __name__ == "__main__":
    sys.exit(main())
