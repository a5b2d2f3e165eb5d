#!/usr/bin/env python3
"""Side by side: baremetal's watchdog and superlance's httpok on the same faults, under real supervisord.

    .venv/bin/python scripts/bench_watchdog.py [--runs 5] [--vllm] [--load-s 180] [--json FILE]

Faults, each measured from outside (supervisord's process info polled every 20 ms, /health every 50 ms):
- hung HTTP server: a [[program]] HTTP server SIGSTOPped (a fresh stack per run, default settings);
- with --vllm: a REAL vLLM-CPU server whose EngineCore is SIGSTOPped with requests in flight (its
  /health keeps answering 200), and the same server under sustained load for --load-s seconds
  (false restarts counted).
detected = the fault until supervisord stops or replaces the process; serving = until /health answers
200 from a new process. Also the watchdog's own CPU per probe cycle (psutil, its whole process). httpok
runs as supervisord event listener on TICK_5 (its fastest) with a 1 s timeout, as its docs suggest.
Medians of --runs runs; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baremetal.supervisord.states import ProcessState  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402
from tests.support.watched import SERVER, Load, vllm_tables, watched_stack  # noqa: E402

HTTPOK = Path(sys.executable).with_name("httpok")


def stack_file(folder: Path, body: str, use_watchdog: bool, extra_watchdog: str = "") -> Path:
    path = folder / "baremetal.toml"
    path.write_text(f'''
[stack]
name = "bench"
root = "state"
[api]
kind = "none"
[watchdog]
enabled = {"true" if use_watchdog else "false"}
metrics_port = {free_port()}
{extra_watchdog}
{body}
''')
    return path


def http_program(port: int) -> str:
    return f'''
[[program]]
name = "web"
command = ["{sys.executable}", "{SERVER}", "--port", "{port}"]
health = "http://127.0.0.1:{port}/health"
startsecs = 1
'''


def add_httpok(run, program: str, url: str) -> None:
    """httpok as supervisord runs it: an event listener, in a conf.d file of our own."""
    conf = Path(run.stack.supervisor_dir) / "conf.d" / "httpok.conf"
    conf.write_text(f"[eventlistener:httpok]\ncommand={HTTPOK} -p {program} -t 1 {url}\nevents=TICK_5\n"
                    f"stdout_logfile={run.stack.logs_dir}/httpok.log\nstderr_logfile={run.stack.logs_dir}/httpok.err.log\n")
    run.client.reload_config()
    run.client.add_group("httpok")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def measure_recovery(run, program: str, health_url: str, victim_pid: int, limit_s: float) -> tuple[float | None, float | None]:
    """SIGSTOP `victim_pid`; seconds until supervisord stops/replaces the program, and until it serves again."""
    old = run.client.process(program).pid
    fault = time.monotonic()
    os.kill(victim_pid, signal.SIGSTOP)
    detected = serving = None
    while time.monotonic() - fault < limit_s:
        info = run.client.process(program)
        if detected is None and (info.state != ProcessState.RUNNING or info.pid != old):
            detected = time.monotonic() - fault
        if detected is not None and info.state == ProcessState.RUNNING and info.pid != old and healthy(health_url):
            serving = time.monotonic() - fault
            break
        time.sleep(0.02)
    if serving is None:
        for process in [psutil.Process(victim_pid)] if psutil.pid_exists(victim_pid) else []:
            process.resume()
    return detected, serving


def wait_serving(run, program: str, url: str, timeout_s: float) -> None:
    wait_for(lambda: run.client.process(program).state == ProcessState.RUNNING and healthy(url), timeout_s,
             interval_s=0.2, what=f"{program} serving")


def watchdog_cpu(run, seconds: float) -> dict:
    """The watchdog process's CPU over `seconds` of normal watching: per probe cycle and as a share of a core."""
    process = psutil.Process(run.client.process("watchdog").pid)

    def snapshot():
        times = process.cpu_times()
        return times.user + times.system, time.monotonic()
    ticks_before = _ticks(run)
    cpu_before, wall_before = snapshot()
    time.sleep(seconds)
    cpu_after, wall_after = snapshot()
    ticks = _ticks(run) - ticks_before
    used = cpu_after - cpu_before
    return {"cycles": ticks, "cpu_ms_per_cycle": 1000 * used / max(ticks, 1),
            "core_percent": 100 * used / (wall_after - wall_before)}


def _ticks(run) -> int:
    port = run.stack.watchdog.metrics_port
    page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False).text
    return int(float(next(line.split()[1] for line in page.splitlines()
                          if line.startswith("baremetal_watchdog_ticks_total"))))


def bench_http(runs: int) -> dict:
    results: dict = {}
    for method in ("watchdog", "httpok"):
        detected, serving = [], []
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix="bmb-", dir="/tmp") as folder:
                port = free_port()
                with watched_stack(stack_file(Path(folder), http_program(port), method == "watchdog")) as run:
                    url = f"http://127.0.0.1:{port}/health"
                    if method == "httpok":
                        add_httpok(run, "web", url)
                    wait_serving(run, "web", url, 30)
                    if method == "watchdog":
                        wait_for(lambda: run.program("web").get("phase") == "ready", 30, what="ready")
                    time.sleep(1.0)
                    found, back = measure_recovery(run, "web", url, run.client.process("web").pid, 60)
                    detected.append(found)
                    serving.append(back)
                    if method == "watchdog" and _ == runs - 1:
                        results["watchdog_cpu_http"] = watchdog_cpu(run, 30)
        results[method] = {"detected_s": detected, "serving_s": serving}
    return results


class PidWatch:
    """Counts the processes a program had while watched (each new pid is one restart)."""

    def __init__(self, run, program: str):
        self.run, self.program, self.pids, self.stop = run, program, set(), threading.Event()
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        while not self.stop.is_set():
            pid = self.run.client.process(self.program).pid
            if pid:
                self.pids.add(pid)
            time.sleep(0.2)

    def restarts(self) -> int:
        self.stop.set()
        return max(0, len(self.pids) - 1)


def frozen_engine_runs(run, url: str, runs: int, limit_s: float) -> dict:
    """SIGSTOP the EngineCore with requests in flight, `runs` times."""
    detected, serving = [], []
    for _ in range(runs):
        wait_serving(run, "vllm-tiny", f"{url}/health", 300)
        time.sleep(2)
        server = psutil.Process(run.client.process("vllm-tiny").pid)
        core = next(p for p in server.children(recursive=True) if p.cmdline()[:1] == ["VLLM::EngineCore"])
        with Load(url, workers=2, max_tokens=200):
            time.sleep(1.0)
            found, back = measure_recovery(run, "vllm-tiny", f"{url}/health", core.pid, limit_s)
        detected.append(found)
        serving.append(back)
        if back is None:
            break
    return {"detected_s": detected, "serving_s": serving}


def busy_load(run, url: str, load_s: float) -> dict:
    """Sustained load; restarts seen meanwhile are false restarts."""
    watch = PidWatch(run, "vllm-tiny")
    with Load(url) as load:
        time.sleep(load_s)
    return {"seconds": load_s, "requests": load.done, "errors": len(load.errors), "false_restarts": watch.restarts()}


def bench_vllm_watchdog(runs: int, load_s: float, results: dict, save) -> None:
    with tempfile.TemporaryDirectory(prefix="bmv-", dir="/tmp") as folder:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # Repeated faults on one stack: no backoff between them (detection rules are the defaults).
        file = stack_file(Path(folder), vllm_tables(port), True, 'restart_backoff = "0s"\nmax_restarts = 100')
        with watched_stack(file) as run:
            wait_serving(run, "vllm-tiny", f"{url}/health", 300)
            results["watchdog_cpu_vllm_idle"] = watchdog_cpu(run, 30)
            save()
            results["watchdog_load"] = busy_load(run, url, load_s - 10)
            with Load(url):
                results["watchdog_cpu_vllm_busy"] = watchdog_cpu(run, 10)
            save()
            results["watchdog_engine_frozen"] = frozen_engine_runs(run, url, runs, 300)


def bench_vllm_httpok(load_s: float, results: dict, save) -> None:
    with tempfile.TemporaryDirectory(prefix="bmh-", dir="/tmp") as folder:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with watched_stack(stack_file(Path(folder), vllm_tables(port), False)) as run:
            # As supervisord would run it from the start: vLLM is RUNNING (startsecs 10) long before it
            # answers /health, and httpok has no grace period.
            add_httpok(run, "vllm-tiny", f"{url}/health")
            watch = PidWatch(run, "vllm-tiny")
            try:
                wait_serving(run, "vllm-tiny", f"{url}/health", 300)
                served = True
            except AssertionError:
                served = False
            results["httpok_loading"] = {"served_within_300s": served, "restarts_while_loading": watch.restarts()}
            save()
    with tempfile.TemporaryDirectory(prefix="bmh-", dir="/tmp") as folder:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with watched_stack(stack_file(Path(folder), vllm_tables(port), False)) as run:
            wait_serving(run, "vllm-tiny", f"{url}/health", 300)
            add_httpok(run, "vllm-tiny", f"{url}/health")        # only once vLLM serves
            results["httpok_load"] = busy_load(run, url, load_s)
            save()
            results["httpok_engine_frozen"] = frozen_engine_runs(run, url, 1, 60)


def median(values: list) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "never"
    text = f"{statistics.median(known):.2f} s"
    return text if len(known) == len(values) else f"{text} ({len(values) - len(known)} never)"


def table(results: dict) -> str:
    rows = [("fault", "supervisor", "detected (median)", "serving again (median)", "runs")]
    for key, label in (("", "hung HTTP server (SIGSTOP)"), ("_engine_frozen", "vLLM EngineCore SIGSTOP, /health 200")):
        for method in ("watchdog", "httpok"):
            entry = results.get(f"{method}{key}")
            if entry:
                name = "baremetal watchdog" if method == "watchdog" else "superlance httpok (TICK_5, -t 1)"
                rows.append((label, name, median(entry["detected_s"]), median(entry["serving_s"]),
                             str(len(entry["detected_s"]))))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    for method in ("watchdog", "httpok"):
        load = results.get(f"{method}_load")
        if load:
            lines.append(f"{method}: {load['seconds']:.0f} s of sustained load on vLLM: {load['requests']} requests, "
                         f"{load['errors']} errors, false restarts: {load['false_restarts']}")
    loading = results.get("httpok_loading")
    if loading:
        lines.append(f"httpok from supervisord's start, vLLM loading: served within 300 s: "
                     f"{loading['served_within_300s']}; restarts while loading: {loading['restarts_while_loading']}")
    for key in ("watchdog_cpu_http", "watchdog_cpu_vllm_idle", "watchdog_cpu_vllm_busy"):
        cpu = results.get(key)
        if cpu:
            lines.append(f"{key}: {cpu['cpu_ms_per_cycle']:.2f} ms CPU per probe cycle, {cpu['core_percent']:.2f}% of "
                         f"one core ({cpu['cycles']} cycles)")
    ratio = [results.get(m, {}).get("detected_s") for m in ("watchdog", "httpok")]
    if all(ratio) and all(v is not None for v in ratio[0] + ratio[1]):
        lines.append(f"detection, httpok / watchdog: {statistics.median(ratio[1]) / statistics.median(ratio[0]):.1f}x")
    lines += [f"error: {error}" for error in results.get("errors", [])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vllm", action="store_true", help="also the real vLLM-CPU faults (minutes)")
    parser.add_argument("--load-s", type=float, default=180.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--only", choices=("http", "vllm-watchdog", "vllm-httpok"), action="append",
                        help="run only these parts (repeatable; the vllm parts need no --vllm then)")
    parser.add_argument("--merge", action="store_true", help="add to the results already in --json")
    args = parser.parse_args()
    if not HTTPOK.exists():
        sys.exit(f"superlance's httpok is not installed beside {sys.executable}: pip install superlance")
    results: dict = json.loads(args.json.read_text()) if args.merge and args.json and args.json.exists() else {}
    results.pop("errors", None)

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

    wanted = set(args.only or (["http"] + (["vllm-watchdog", "vllm-httpok"] if args.vllm else [])))
    parts = {"http": lambda: results.update(bench_http(args.runs)),
             "vllm-watchdog": lambda: bench_vllm_watchdog(max(1, args.runs // 2 + 1), args.load_s, results, save),
             "vllm-httpok": lambda: bench_vllm_httpok(args.load_s, results, save)}
    sections = [part for name, part in parts.items() if name in wanted]
    for section in sections:
        try:
            section()
        except Exception as error:  # noqa: BLE001 - report what was measured, and what broke
            results.setdefault("errors", []).append(f"{type(error).__name__}: {error}")
        save()
    print(table(results))


if __name__ == "__main__":
    main()
