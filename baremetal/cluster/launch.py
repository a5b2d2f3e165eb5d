"""Start a program that drives the Ray cluster once the cluster can hold it, then become that program.

    python -m baremetal.cluster.launch --ray-python PY --gpus N [--clean DIR ...] -- ARGV...

supervisord runs this in place of a vLLM server on Ray's executor (or a [[program]] with ray_gpus). It
removes shared-memory segments that dead engines left behind (only those no live process uses), waits
until Ray reports N GPUs free (asking Ray from the cluster's env, whose interpreter is PY, with
RAY_ADDRESS and the token from the environment), then exec's ARGV: the pid stays the one supervisord
started, so stopping the program stops the engine. Waiting has no deadline: a node that is down keeps
the model down, and the log says what is missing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from baremetal.cluster import shm
from baremetal.launchers import launcher_path

WAIT_SHIM = launcher_path("ray_wait")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(our options, the program's argv after `--`)."""
    if "--" not in argv:
        raise SystemExit("launch: give the program's command after --")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="baremetal.cluster.launch")
    parser.add_argument("--ray-python", required=True, help="interpreter of the cluster's Ray env")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs that must be free in the cluster")
    parser.add_argument("--clean", action="append", default=[], help="folder to clear of stale segments")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between looks at the cluster")
    options = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        raise SystemExit("launch: the command after -- is empty")
    return options, command


def main(argv: list[str]) -> None:
    """Clean, wait, then become the program (never returns when it starts it)."""
    options, command = parse(argv)
    removed = shm.clean([Path(folder) for folder in options.clean], time.time())
    for segment in removed:
        print(f"launch: removed stale {segment.path} ({segment.size_bytes} bytes, no live process used it)",
              flush=True)
    wait = [options.ray_python, str(WAIT_SHIM), "--gpus", str(options.gpus), "--interval", str(options.interval)]
    result = subprocess.run(wait)
    if result.returncode != 0:
        sys.exit(result.returncode)
    print(f"launch: the cluster has {options.gpus} GPU(s) free; starting {command[0]}", flush=True)
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
