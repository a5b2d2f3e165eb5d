"""Write the Ray cluster's membership to a JSON file, for the watchdog and `baremetal status` on the head.

Runs in the cluster's Ray env (stdlib + ray) as the head's `ray-monitor` program:
    python ray_monitor.py --address HEAD:GCS_PORT --out <root>/run/cluster.json [--interval 1] [--heartbeat 5]

It asks the GCS (with the token named by RAY_AUTH_TOKEN_PATH) for every node it knows, alive or dead,
and the GPUs each has and has free. The file is replaced atomically when anything changes, and at least
every `heartbeat` seconds so that readers can tell a live monitor from a dead one (`written_s`).
Ray's GcsClient is what `ray status` itself uses; it does not register a job or start workers.
Format: {"written_s", "gcs_address", "gcs_ok", "error", "nodes": [{"node_id", "address", "alive",
"is_head", "start_s", "end_s", "death_reason", "gpus_total", "gpus_free"}]}
"""

import argparse
import json
import os
import sys
import tempfile
import time

ALIVE = 0                      # GcsNodeInfo.GcsNodeState.ALIVE
CALL_TIMEOUT_S = 2


def snapshot(client) -> list:
    """Every node the GCS knows, as plain dicts, sorted by address then start time."""
    usage = {}
    try:
        reply = client.get_all_resource_usage(timeout=CALL_TIMEOUT_S)
        for entry in reply.resource_usage_data.batch:
            usage[entry.node_id] = dict(entry.resources_available)
    except Exception:  # noqa: BLE001 - free GPUs are a detail; membership is what matters
        pass
    nodes = []
    for node_id, info in client.get_all_node_info(timeout=CALL_TIMEOUT_S).items():
        raw_id = node_id.binary() if hasattr(node_id, "binary") else bytes(info.node_id)
        total = dict(info.resources_total)
        death = info.death_info.reason_message if info.HasField("death_info") else ""
        nodes.append({
            "node_id": raw_id.hex(), "address": info.node_manager_address, "alive": info.state == ALIVE,
            "is_head": bool(info.is_head_node), "start_s": info.start_time_ms / 1000,
            "end_s": info.end_time_ms / 1000 if info.end_time_ms else None, "death_reason": death[:300],
            "gpus_total": total.get("GPU", 0.0),
            "gpus_free": usage.get(bytes(info.node_id), {}).get("GPU") if info.state == ALIVE else None,
        })
    return sorted(nodes, key=lambda node: (node["address"], node["start_s"]))


def write(path: str, document: dict) -> None:
    """Replace `path` in one step (readers see the old or the new document); no fsync: it is rewritten often."""
    folder = os.path.dirname(path) or "."
    handle, temporary = tempfile.mkstemp(prefix=".cluster.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(document, stream, indent=1, sort_keys=True)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main() -> None:
    """Report for ever; reconnect whenever the GCS fails to answer."""
    parser = argparse.ArgumentParser(prog="ray_monitor.py")
    parser.add_argument("--address", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    options = parser.parse_args()
    from ray._raylet import GcsClient

    client = None
    last, written_at = None, 0.0
    while True:
        state = {"gcs_address": options.address, "gcs_ok": False, "error": "", "nodes": []}
        try:
            if client is None:
                client = GcsClient(address=options.address)
            state["nodes"] = snapshot(client)
            state["gcs_ok"] = True
        except Exception as error:  # noqa: BLE001 - report an unreachable head, then reconnect
            state["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
            client = None
        now = time.time()
        if state != last or now - written_at >= options.heartbeat:
            write(options.out, dict(state, written_s=now))
            last, written_at = state, now
        time.sleep(options.interval)


if __name__ == "__main__":
    sys.exit(main())
