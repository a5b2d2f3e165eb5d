#!/usr/bin/env python3
"""How fast the control commands answer on an already-running stack, side by side with supervisorctl.

Starts a throwaway stack of small real HTTP servers (with health URLs) and idle programs under real
supervisord, then times, as an operator runs them (a fresh process each time):
  baremetal status            (XML-RPC, a quick probe of each program, restarts from the log)
  supervisorctl status        (the reference: XML-RPC only)
  baremetal status --json
  baremetal up                (nothing changed: render, reloadConfig, deep probes)
Prints medians (this machine is noisy) and ratios to supervisorctl, then stops the stack.

    .venv/bin/python scripts/bench_control.py [--programs 6] [--runs 21]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.lifecycle import SERVER  # noqa: E402
from tests.support.ports import free_port  # noqa: E402


def write_stack(folder: Path, programs: int) -> Path:
    tables = []
    for index in range(programs):
        if index % 2 == 0:
            port = free_port()
            command = [sys.executable, str(SERVER), "--port", str(port)]
            health = f'health = "http://127.0.0.1:{port}/health"\n'
        else:
            command, health = ["sleep", "3600"], ""
        tables.append(f'[[program]]\nname = "p{index}"\ncommand = {json.dumps(command)}\nstartsecs = 1\n{health}')
    config = folder / "baremetal.toml"
    config.write_text('[stack]\nname = "bench"\nroot = "state"\n[api]\nkind = "none"\n[watchdog]\nenabled = false\n\n'
                      + "\n".join(tables))
    return config


def timed(argv: list[str], runs: int, ok_codes: tuple[int, ...] = (0,)) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, text=True)
        samples.append(time.perf_counter() - started)
        if result.returncode not in ok_codes:
            raise SystemExit(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=6)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--up-runs", type=int, default=7)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bm-bench-", dir="/tmp"))
    baremetal = [sys.executable, "-m", "baremetal"]
    config = write_stack(folder, options.programs)
    conf = folder / "state" / "supervisor" / "supervisord.conf"
    try:
        subprocess.run(baremetal + ["up", "-c", str(config)], check=True, capture_output=True)
        rows = [
            ("supervisorctl status", timed([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf),
                                            "status"], options.runs)),
            ("baremetal status", timed(baremetal + ["status", "-c", str(config)], options.runs)),
            ("baremetal status --json", timed(baremetal + ["status", "--json", "-c", str(config)], options.runs)),
            ("baremetal up (nothing changed)", timed(baremetal + ["up", "-c", str(config)], options.up_runs)),
        ]
    finally:
        subprocess.run(baremetal + ["down", "-c", str(config)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    reference = statistics.median(rows[0][1])
    print(f"{options.programs} programs ({(options.programs + 1) // 2} probed over HTTP); "
          f"medians of {options.runs} runs ({options.up_runs} for up); each a fresh process")
    print(f"{'command':<32} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'x supervisorctl':>16}")
    for name, samples in rows:
        median = statistics.median(samples)
        print(f"{name:<32} {median * 1000:>10.0f} {min(samples) * 1000:>8.0f} {max(samples) * 1000:>8.0f} "
              f"{median / reference:>16.2f}")


if __name__ == "__main__":
    main()
