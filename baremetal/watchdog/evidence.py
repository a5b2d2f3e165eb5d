"""Evidence of a hang, gathered before the kill into one folder per restart:

    <root>/evidence/<YYYYmmdd-HHMMSS>-<program>/     (0700; the newest watchdog.evidence_keep are kept)
        stacks.txt     py-spy dump of every process of the program's tree (API server, EngineCore, ranks)
        nvml.txt       its GPUs as NVML read them: the last reading in full, the readings during the stall,
                       and `nvidia-smi -q` of those GPUs where nvidia-smi is installed
        metrics.txt    the engine's /metrics page (vLLM's gauges and counters) as it stood
        log-tail.txt   the last lines of its stdout and stderr logs
        probes.json    the watchdog's recent observations of it
        nccl/          NCCL flight recorder dumps of its ranks (programs on more than one GPU)
        summary.json   what, when, why, which hang kind, each process, how long each part took

Every part runs at once, each with its own time limit, so a restart waits at most COLLECT_BUDGET_S
for all of it (the stacks of a frozen engine take about 0.1 s; `--nonblocking` reads a stopped
process, which py-spy cannot suspend). Subprocesses (py-spy, nvidia-smi) go through the `run` seam.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil

from baremetal.host.files import atomic_write
from baremetal.host.processes import FROZEN_STATES, describe, tree
from baremetal.supervisord.logtail import last_text
from baremetal.engines import flight_recorder

EVIDENCE_DIR = "evidence"
DUMP_TIMEOUT_S = 3.0          # one py-spy dump (a healthy one takes ~0.1 s)
COLLECT_BUDGET_S = 4.0        # everything together
LOG_LINES = 200

Run = Callable[[Sequence[str], float], tuple[int, str]]   # (argv, timeout_s) -> (exit status, output)


def run_command(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
    """The real seam: run argv (never a shell), stdout and stderr together; 124 when it timed out."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, f"(no answer within {timeout_s:g}s)"
    except OSError as error:
        return 127, f"(cannot run {argv[0]}: {error})"
    return done.returncode, done.stdout + done.stderr


def find_py_spy() -> str | None:
    """py-spy beside baremetal's interpreter (installed with it), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def evidence_dir(root: Path) -> Path:
    return Path(root) / EVIDENCE_DIR


def folder_for(root: Path, program: str, now_s: float) -> Path:
    """A new folder's path: <root>/evidence/<local time>-<program>, with -2, -3 ... if taken."""
    base = evidence_dir(root) / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now_s))}-{program}"
    candidate, number = base, 2
    while candidate.exists():
        candidate, number = Path(f"{base}-{number}"), number + 1
    return candidate


def folders(root: Path) -> list[Path]:
    """Evidence folders, oldest first."""
    where = evidence_dir(root)
    if not where.is_dir():
        return []
    return sorted((p for p in where.iterdir() if p.is_dir()), key=lambda p: (p.stat().st_mtime, p.name))


def prune(root: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` folders; the ones removed."""
    old = folders(root)[:-keep] if keep > 0 else folders(root)
    for folder in old:
        shutil.rmtree(folder, ignore_errors=True)
    return old


@dataclass(frozen=True)
class Request:
    """What to gather about one program (everything known at the decision, in plain data)."""

    program: str
    folder: Path
    pid: int                                  # supervisord's pid of it: its tree is dumped
    reason: str
    time_s: float
    action: str = "restart"
    hang: dict | None = None                  # {"kind", "words", "detail"}
    gpus: tuple[int, ...] = ()
    gpu_readings: tuple[dict, ...] = ()       # GpuSample.to_json() of its GPUs during the stall, oldest first
    probes: tuple[dict, ...] = ()
    metrics_url: str | None = None
    log_files: tuple[Path, ...] = ()
    nccl_prefix: str | None = None            # TORCH_NCCL_DEBUG_INFO_TEMP_FILE of its ranks
    nvml_alone: dict | None = None            # the hang kind NVML's readings alone give (processes' states aside)


@dataclass
class Result:
    folder: Path
    elapsed_s: float = 0.0
    stacks_ok: int = 0
    processes: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"evidence in {self.elapsed_s:.1f}s ({self.stacks_ok}/{self.processes} stacks) at {self.folder}"
                + (f"; {'; '.join(self.errors)}" if self.errors else ""))


class Collector:
    """Gathers evidence; `run`, `http` and `py_spy` are the seams."""

    def __init__(self, http: Any, run: Run = run_command, py_spy: str | None = None,
                 nvidia_smi: str | None = None, budget_s: float = COLLECT_BUDGET_S):
        self.http = http
        self.run = run
        self.py_spy = py_spy if py_spy is not None else find_py_spy()
        self.nvidia_smi = nvidia_smi if nvidia_smi is not None else shutil.which("nvidia-smi")
        self.budget_s = budget_s

    def collect(self, request: Request) -> Result:
        """Write the folder; never raises (what failed is said in summary.json)."""
        began = time.monotonic()
        result = Result(request.folder)
        try:
            request.folder.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(request.folder.parent, 0o700)
            request.folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(request.folder, 0o700)
        except OSError as error:
            result.errors.append(f"cannot create {request.folder}: {error}")
            return result
        members = tree(request.pid)
        result.processes = len(members)
        timings: dict[str, float] = {}
        parts: dict[str, Any] = {}
        pool = ThreadPoolExecutor(max_workers=len(members) + 4, thread_name_prefix="evidence")
        futures = {("stack", p.pid): pool.submit(self._timed, timings, f"stack {p.pid}", self._stack, p)
                   for p in members}
        futures[("nvml", 0)] = pool.submit(self._timed, timings, "nvml", self._nvml, request)
        futures[("metrics", 0)] = pool.submit(self._timed, timings, "metrics", self._metrics, request)
        futures[("nccl", 0)] = pool.submit(self._timed, timings, "nccl", self._nccl, request)
        done, _late = wait(futures.values(), timeout=self.budget_s)
        pool.shutdown(wait=False, cancel_futures=True)     # a late part ends by its own time limit, unread
        for key, future in futures.items():
            parts[key] = future.result() if future in done else None
        stacks = [parts[("stack", p.pid)] or (describe(p), False, f"(no dump within {self.budget_s:g}s)")
                  for p in members]
        result.stacks_ok = sum(1 for _title, ok, _text in stacks if ok)
        self._write(request, stacks, parts, timings, result, began)
        return result

    @staticmethod
    def _timed(timings: dict[str, float], name: str, function: Callable, *args: Any) -> Any:
        began = time.monotonic()
        try:
            return function(*args)
        finally:
            timings[name] = round(time.monotonic() - began, 3)

    def _stack(self, process: psutil.Process) -> tuple[str, bool, str]:
        """(title, dumped?, text) for one process: a stopped one is read without suspending it."""
        try:
            stopped = process.status() in FROZEN_STATES
            state = process.status()
        except psutil.Error:
            return describe(process), False, "(gone)"
        title = f"{describe(process)} state {state}"
        if self.py_spy is None:
            return title, False, "(py-spy is not installed: `pip install py-spy` into baremetal's environment)"
        argv = [self.py_spy, "dump", "--pid", str(process.pid)]
        code, text = self.run(argv + (["--nonblocking"] if stopped else []), DUMP_TIMEOUT_S)
        if code != 0 and not stopped:
            code, text = self.run(argv + ["--nonblocking"], DUMP_TIMEOUT_S)
        return title, code == 0, _trim_backtrace(text)

    def _nvml(self, request: Request) -> str:
        if not request.gpu_readings:
            return "No GPU readings: the program is not on a GPU, or NVML is not available here.\n"
        lines = [f"GPUs of {request.program}: {', '.join(map(str, request.gpus)) or 'from its processes'}", ""]
        newest = {}
        for reading in request.gpu_readings:
            newest[reading.get("index")] = reading
        for index, reading in sorted(newest.items(), key=lambda item: str(item[0])):
            lines.append(f"== GPU {index}, last reading")
            lines += [f"  {key:28} {value}" for key, value in reading.items()]
        lines += ["", "== readings during the stall (time, GPU, SM %, memory %, power W, memory used MiB)"]
        for reading in request.gpu_readings:
            used = reading.get("memory_used_bytes")
            lines.append(f"  {reading.get('time_s'):.1f}  GPU {reading.get('index')}  "
                         f"{reading.get('utilization_gpu_percent')}  {reading.get('utilization_memory_percent')}  "
                         f"{reading.get('power_w')}  {None if used is None else round(used / 2**20)}")
        if self.nvidia_smi and request.gpus:
            code, text = self.run([self.nvidia_smi, "-q", "-i", ",".join(map(str, request.gpus))], DUMP_TIMEOUT_S)
            lines += ["", f"== nvidia-smi -q -i {','.join(map(str, request.gpus))} (exit {code})", text]
        return "\n".join(lines) + "\n"

    def _metrics(self, request: Request) -> str:
        if not request.metrics_url:
            return "(no metrics page for this program)\n"
        try:
            answer = self.http.get(request.metrics_url, timeout=1.5)
        except Exception as error:  # noqa: BLE001 - evidence is best effort: say what happened
            return f"GET {request.metrics_url}: {type(error).__name__}: {error}\n"
        return f"# GET {request.metrics_url}: {answer.status_code}\n{answer.text}"

    def _nccl(self, request: Request) -> list[str]:
        if not request.nccl_prefix:
            return []
        return flight_recorder.collect(request.nccl_prefix, request.folder / "nccl", min(3.0, self.budget_s - 0.5))

    def _write(self, request: Request, stacks: list, parts: dict, timings: dict, result: Result,
               began: float) -> None:
        folder = request.folder
        text = [f"py-spy dump of every process of {request.program} ({len(stacks)}), before the stop\n"]
        for title, ok, body in stacks:
            text.append(f"=== {title}{'' if ok else ' (no stack)'}\n{body.rstrip()}\n")
        _write(folder / "stacks.txt", "\n".join(text))
        _write(folder / "nvml.txt", parts.get(("nvml", 0)) or "(NVML details not gathered in time)\n")
        _write(folder / "metrics.txt", parts.get(("metrics", 0)) or "(metrics not gathered in time)\n")
        tails = [f"=== {path} (last {LOG_LINES} lines)\n{last_text(path, LOG_LINES)}" for path in request.log_files]
        _write(folder / "log-tail.txt", "\n".join(tails) or "(no log files)\n")
        _write(folder / "probes.json", json.dumps(list(request.probes), indent=1, default=str) + "\n")
        nccl = parts.get(("nccl", 0)) or []
        result.elapsed_s = time.monotonic() - began
        summary = {"program": request.program, "time_s": round(request.time_s, 3),
                   "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(request.time_s)),
                   "action": request.action, "reason": request.reason, "hang": request.hang,
                   "nvml_alone": request.nvml_alone, "gpu_readings": list(request.gpu_readings),
                   "gpus": list(request.gpus), "processes": [{"title": t, "stack": ok} for t, ok, _ in stacks],
                   "nccl_dumps": nccl, "py_spy": self.py_spy, "seconds": round(result.elapsed_s, 3),
                   "timings_s": timings, "errors": result.errors}
        _write(folder / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")


def _write(path: Path, text: str) -> None:
    atomic_write(path, text, mode=0o600, durable=False)


def _trim_backtrace(text: str) -> str:
    """py-spy's own Rust backtrace after an error says nothing about the program: keep the error."""
    head, _sep, _rest = text.partition("\nStack backtrace:")
    return head.rstrip() + "\n"
