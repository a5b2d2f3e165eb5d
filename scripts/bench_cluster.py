#!/usr/bin/env python3
"""Measure a two-node cluster on this machine: how long nodes take to join, how fast the head sees a
worker node lost (killed, frozen, unplugged) and how fast it is back, and how much memory Ray takes.

    sudo .venv/bin/python scripts/bench_cluster.py [--rounds 3]

Hosts are network namespaces (tests/cluster/netns.py), each with its own supervisord started by
`baremetal up`, Ray from the cached test env (tests/engine_envs.py). Prints one table: median, min and
max over the rounds. Times are wall-clock on a shared machine: read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import netns  # noqa: E402
from tests.support.cluster import ClusterRun, start_cluster, stop_cluster  # noqa: E402
from tests.support.engine_envs import ensure_env  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402


def program_rss_bytes(run: ClusterRun, node: str, program: str) -> int:
    """Resident memory of a program and all its descendants on `node`."""
    pid = run.supervisor(node).process(program).pid
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root] + root.children(recursive=True) if p.is_running())


def loss(run: ClusterRun, cause, cure=None) -> tuple[float, float]:
    """(seconds until the head sees w1 lost, seconds from the cure until w1 is alive again)."""
    starts = run.ray_starts("w1")
    before = run.states()["w1"].node_id
    started = time.monotonic()
    cause()
    wait_for(lambda: run.incarnation_dead(before), 60, 0.1, "w1 declared dead")
    lost_s = time.monotonic() - started
    if cure:
        cure()
    back_s = run.wait_states({"w1": "alive"}, 120)
    run.wait_ray_started("w1", starts)     # not lost again while `ray start` is still starting up
    if back_s > 15 and "--explain" in sys.argv:
        from tests.support.cluster import log_of

        print(open(run.stacks["w1"].logs_dir / "supervisord.log").read()[-2000:], file=sys.stderr)
        print(log_of(run, "w1", "ray-worker")[-3000:], file=sys.stderr)
    return lost_s, back_s


def one_round(network: netns.Network, ray_python: str) -> dict[str, float]:
    run = start_cluster(network, ray_python, nodes=())
    try:
        run.up("head")
        run.wait_states({"head": "alive"}, 60)
        started = time.monotonic()
        run.up("w1")
        run.wait_states({"w1": "alive"}, 60)
        figures = {"w1 joins after `up` (s)": time.monotonic() - started}
        run.wait_ray_started("w1", 0)
        time.sleep(5)                                   # let Ray's processes settle before weighing them
        figures["ray-head memory (MB)"] = program_rss_bytes(run, "head", "ray-head") / 1e6
        figures["ray-worker memory (MB)"] = program_rss_bytes(run, "w1", "ray-worker") / 1e6
        host = network.host("w1")
        pid = run.supervisor("w1").process("ray-worker").pid
        figures["killed: lost (s)"], figures["killed: back (s)"] = loss(run, lambda: psutil.Process(pid).kill())
        figures["frozen: lost (s)"], figures["thawed: back (s)"] = loss(
            run, lambda: host.signal_all(signal.SIGSTOP), lambda: host.signal_all(signal.SIGCONT))
        figures["unplugged: lost (s)"], figures["plugged: back (s)"] = loss(run, host.unplug, host.plug)
        return figures
    except AssertionError:
        from tests.support.cluster import log_of

        for node, program in (("head", "ray-head"), ("w1", "ray-worker")):
            print(f"--- {program} on {node}:\n{log_of(run, node, program)[-3000:]}", file=sys.stderr)
        raise
    finally:
        stop_cluster(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--explain", action="store_true", help="print w1's logs when it takes over 15 s to come back")
    options = parser.parse_args()
    reason = netns.supported()
    if reason:
        sys.exit(f"cannot make hosts here: {reason}")
    ray_python = str(ensure_env("ray") / "bin" / "python")
    rounds = []
    with netns.Network.create(["head", "w1"]) as network:
        for number in range(options.rounds):
            rounds.append(one_round(network, ray_python))
            print(f"round {number + 1}/{options.rounds}: " + ", ".join(f"{name} {value:.1f}" for name, value
                                                                      in rounds[-1].items()), file=sys.stderr, flush=True)
    width = max(len(name) for name in rounds[0])
    print(f"{'measure':<{width}}  {'median':>8}  {'min':>8}  {'max':>8}   ({options.rounds} rounds, lost_after = 6s)")
    for name in rounds[0]:
        values = [figures[name] for figures in rounds]
        print(f"{name:<{width}}  {statistics.median(values):8.1f}  {min(values):8.1f}  {max(values):8.1f}")


if __name__ == "__main__":
    main()
