"""up, down, status, start/stop/restart over real supervisord and real child processes (small HTTP servers)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time

import pytest

from tests.support.lifecycle import (alive, child_pid_from_log, force_down, program_toml, programs_by_name, run,
                                     server_command, stack_toml, status_json)
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real supervisord and real servers


@pytest.fixture
def stack(write_stack, short_tmp):
    """Write a stack file from program tables; every supervisord started under it is gone after the test."""
    made = []

    def make(programs: list[str], name: str = "t", root: str = "state", file: str = "baremetal.toml"):
        config = write_stack(stack_toml(name, programs, root), name=file)
        made.append((config, short_tmp / root))
        return config

    yield make
    for config, root in made:
        if (root / "run" / "supervisord.pid").exists():
            run("down", "-c", str(config))
        force_down(root)


def test_up_waits_for_readiness_then_status_shows_it(stack, short_tmp):
    port = free_port()
    config = stack([program_toml("web", server_command(port, "--ready-after", "3"), health_port=port),
                    program_toml("idle", ["sleep", "600"])])
    result = run("up", "--timeout", "60s", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "started supervisord" in result.output
    assert "web" in result.output and "ready (" in result.output
    import httpx

    # up returned only once the program really served: /health says 200 now.
    assert httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).status_code == 200
    rows = programs_by_name(config)
    assert rows["web"]["state"] == "RUNNING" and rows["web"]["ready"] is True and rows["web"]["port"] == port
    assert rows["idle"]["ready"] is True and rows["idle"]["restarts"] == 0
    table = run("status", "-c", str(config))
    assert table.exit_code == 0 and "2/2 program(s) running and ready" in table.output


def test_up_no_wait_returns_before_ready_and_status_says_not_ready(stack):
    port = free_port()
    config = stack([program_toml("slow", server_command(port, "--ready-after", "60"), health_port=port)])
    result = run("up", "--no-wait", "-c", str(config))
    assert result.exit_code == 0, result.output
    wait_for(lambda: programs_by_name(config)["slow"]["state"] == "RUNNING", 20, what="slow RUNNING")
    # RUNNING comes before the server listens (slowly, on a loaded machine): wait for its 503 answer.
    table = wait_for(lambda: (lambda out: out if "503" in out.output else None)(run("status", "-c", str(config))),
                     30, what="status showing the probe's 503")
    assert table.exit_code == 1
    assert "slow: probe: " in table.output and "503" in table.output


def test_up_gives_up_at_its_timeout_and_says_what_was_not_ready(stack):
    port = free_port()
    config = stack([program_toml("slow", server_command(port, "--ready-after", "600"), health_port=port)])
    started = time.monotonic()
    result = run("up", "--timeout", "4s", "-c", str(config))
    assert result.exit_code == 1
    assert time.monotonic() - started < 20
    assert re.search(r"not ready after \d+s \(timeout 4s\)", result.output)
    assert "slow: RUNNING: probe: " in result.output and "503" in result.output
    assert f"listening on 127.0.0.1:{port}" in result.output          # the last lines of its log


def test_kill_9_of_a_child_is_restarted_and_counted(stack):
    port = free_port()
    config = stack([program_toml("web", server_command(port), health_port=port)])
    assert run("up", "-c", str(config)).exit_code == 0
    first = programs_by_name(config)["web"]["pid"]
    os.kill(first, signal.SIGKILL)
    row = wait_for(lambda: (r := programs_by_name(config)["web"])["state"] == "RUNNING" and r["pid"] != first and r,
                   30, what="web restarted")
    assert row["restarts"] == 1 and row["ready"] is True
    assert not alive(first)


def test_program_that_exits_at_once_ends_fatal_and_up_shows_its_log(stack):
    crash = [sys.executable, "-c", "import sys; print('cannot load model: weights missing', file=sys.stderr); "
             "sys.exit(3)"]
    config = stack([program_toml("broken", crash, startsecs=3), program_toml("idle", ["sleep", "600"])])
    started = time.monotonic()
    result = run("up", "--timeout", "5m", "-c", str(config))
    took_s = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "broken: FATAL: supervisord gave up starting it" in result.output
    assert "cannot load model: weights missing" in result.output
    assert "broken.err.log" in result.output
    # startsecs=3, startretries=2: three spawns, FATAL after the backoffs (1+2+3 s) plus start-up.
    assert took_s < 30, f"took {took_s:.1f}s to report a program that cannot start"
    assert programs_by_name(config)["broken"]["state"] == "FATAL"


def test_declared_port_already_in_use_is_named_before_anything_starts(stack, short_tmp):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = stack([program_toml("web", server_command(port), health_port=port)])
        result = run("up", "-c", str(config))
    assert result.exit_code == 1
    assert f"port {port} of program 'web' is already in use by pid {os.getpid()}" in result.output
    assert not (short_tmp / "state" / "run" / "supervisord.pid").exists()


def test_undeclared_port_in_use_fails_the_program_and_up_shows_why(stack):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        # No health URL and no port: baremetal cannot check the port first; the program's log tells.
        config = stack([program_toml("web", server_command(port), startsecs=2)])
        result = run("up", "--timeout", "60s", "-c", str(config))
    assert result.exit_code == 1
    assert "web: FATAL" in result.output
    assert "Address already in use" in result.output


def test_down_leaves_no_process_behind(stack, short_tmp):
    port = free_port()
    config = stack([program_toml("web", server_command(port, "--spawn-child", "--spawn-escaper"), health_port=port),
                    program_toml("idle", ["sleep", "600"])])
    assert run("up", "-c", str(config)).exit_code == 0
    logs = short_tmp / "state" / "logs"
    rows = programs_by_name(config)
    supervisord = status_json(config)["supervisord"]["pid"]
    pids = [supervisord, rows["web"]["pid"], rows["idle"]["pid"],
            child_pid_from_log(logs / "web.log", "child"), child_pid_from_log(logs / "web.log", "escaper")]
    assert all(alive(pid) for pid in pids)
    result = run("down", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "ended 1 process(es) that outlived their program" in result.output
    assert [pid for pid in pids if alive(pid)] == []
    assert not (short_tmp / "state" / "run" / "supervisor.sock").exists()
    assert run("status", "-c", str(config)).exit_code == 3


def test_up_again_restarts_only_the_changed_program(stack, short_tmp):
    port_a, port_b = free_port(), free_port()
    programs = [program_toml("a", server_command(port_a), health_port=port_a),
                program_toml("b", server_command(port_b), health_port=port_b)]
    config = stack(programs)
    assert run("up", "-c", str(config)).exit_code == 0
    before = {name: row["pid"] for name, row in programs_by_name(config).items()}

    again = run("up", "-c", str(config))
    assert again.exit_code == 0 and "nothing changed: no program restarted" in again.output
    assert {name: row["pid"] for name, row in programs_by_name(config).items()} == before

    config.write_text(config.read_text().replace(f'"{port_b}"]', f'"{port_b}", "--ready-after", "1"]'))
    edited = run("up", "-c", str(config))
    assert edited.exit_code == 0, edited.output
    assert "changed (restarted): b" in edited.output
    after = {name: row["pid"] for name, row in programs_by_name(config).items()}
    assert after["a"] == before["a"] and after["b"] != before["b"]
    assert not alive(before["b"])

    config.write_text(stack_toml("t", programs[:1]))
    removed = run("up", "-c", str(config))
    assert removed.exit_code == 0 and "removed: b" in removed.output
    assert set(programs_by_name(config)) == {"a"} and not alive(after["b"])


def test_up_waits_out_a_slow_stop_and_never_leaves_the_program_stopped(stack):
    # A server that ignores SIGTERM (vLLM under load) is SIGKILLed by supervisord only after stopwaitsecs,
    # longer than one XML-RPC call may take: `up` must neither mistake that for a wedged supervisord nor
    # leave the program stopped.
    port = free_port()
    program = program_toml("stubborn", server_command(port, "--ignore-term"), health_port=port,
                           extra="stopwaitsecs = 13\nenvironment = { STAMP = \"1\" }")
    config = stack([program])
    assert run("up", "-c", str(config)).exit_code == 0
    before = programs_by_name(config)["stubborn"]["pid"]
    config.write_text(config.read_text().replace('STAMP = "1"', 'STAMP = "2"'))
    started = time.monotonic()
    edited = run("up", "--timeout", "60s", "-c", str(config))
    assert edited.exit_code == 0, edited.output
    assert time.monotonic() - started >= 13
    assert re.search(r"stopped stubborn \(1[3-9]\.\ds\)", edited.output), edited.output
    assert "did not answer" not in edited.output
    row = programs_by_name(config)["stubborn"]
    assert row["state"] == "RUNNING" and row["ready"] is True and row["pid"] != before and not alive(before)
    import psutil

    assert psutil.Process(row["pid"]).environ()["STAMP"] == "2"


def test_two_stacks_side_by_side(stack, short_tmp):
    port_one, port_two = free_port(), free_port()
    one = stack([program_toml("web", server_command(port_one), health_port=port_one)], name="one", root="one",
                file="one.toml")
    two = stack([program_toml("web", server_command(port_two), health_port=port_two)], name="two", root="two",
                file="two.toml")
    assert run("up", "-c", str(one)).exit_code == 0
    assert run("up", "-c", str(two)).exit_code == 0
    first, second = status_json(one), status_json(two)
    assert first["supervisord"]["pid"] != second["supervisord"]["pid"]
    assert first["programs"][0]["pid"] != second["programs"][0]["pid"]
    assert first["programs"][0]["port"] == port_one and second["programs"][0]["port"] == port_two
    assert run("down", "-c", str(one)).exit_code == 0
    assert run("status", "-c", str(one)).exit_code == 3
    assert run("status", "-c", str(two)).exit_code == 0
    assert alive(second["programs"][0]["pid"])
    assert run("down", "-c", str(two)).exit_code == 0


def test_stale_socket_and_pidfile_from_a_killed_supervisord(stack, short_tmp):
    port = free_port()
    config = stack([program_toml("web", server_command(port), health_port=port)])
    assert run("up", "-c", str(config)).exit_code == 0
    run_dir = short_tmp / "state" / "run"
    daemon_pid = int((run_dir / "supervisord.pid").read_text())
    orphan = programs_by_name(config)["web"]["pid"]
    os.kill(daemon_pid, signal.SIGKILL)
    wait_for(lambda: not alive(daemon_pid), 10, what="supervisord gone")
    assert (run_dir / "supervisor.sock").exists() and alive(orphan)

    status = run("status", "-c", str(config))
    assert status.exit_code == 3 and "stopped abnormally" in status.output and "Traceback" not in status.output
    assert run("start", "web", "-c", str(config)).exit_code == 3

    result = run("up", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "died without cleaning up" in result.output and f"{orphan} (" in result.output
    assert not alive(orphan)
    row = programs_by_name(config)["web"]
    assert row["ready"] is True and row["pid"] != orphan and row["restarts"] == 0


def test_start_stop_restart_by_program_or_model_name(stack):
    port = free_port()
    serves = f'serves = {{ model = "m1", task = "embed", url = "http://127.0.0.1:{port}" }}'
    config = stack([program_toml("emb", server_command(port), health_port=port, extra=serves),
                    program_toml("idle", ["sleep", "600"])])
    assert run("up", "-c", str(config)).exit_code == 0
    idle_pid = programs_by_name(config)["idle"]["pid"]

    unknown = run("restart", "nope", "-c", str(config))
    assert unknown.exit_code == 2
    assert "no program or model named 'nope'" in unknown.output and "programs: emb, idle" in unknown.output
    assert "models: m1" in unknown.output

    assert run("stop", "m1", "-c", str(config)).exit_code == 0
    assert programs_by_name(config)["emb"]["state"] == "STOPPED"
    stopped = run("status", "-c", str(config))
    assert stopped.exit_code == 1 and "`baremetal start emb`" in stopped.output

    started = run("start", "emb", "-c", str(config))
    assert started.exit_code == 0 and "running and ready" in started.output
    old = programs_by_name(config)["emb"]["pid"]
    restarted = run("restart", "m1", "--timeout", "30s", "-c", str(config))
    assert restarted.exit_code == 0, restarted.output
    rows = programs_by_name(config)
    assert rows["emb"]["pid"] != old and rows["emb"]["ready"] is True and rows["idle"]["pid"] == idle_pid

    assert run("down", "idle", "-c", str(config)).exit_code == 0
    assert programs_by_name(config)["idle"]["state"] == "STOPPED"
    back = run("up", "-c", str(config))
    assert back.exit_code == 0 and "started: idle" in back.output


def test_status_shows_the_watchdog_view_while_fresh(stack, short_tmp):
    port = free_port()
    config = stack([program_toml("web", server_command(port), health_port=port)])
    assert run("up", "-c", str(config)).exit_code == 0
    report = short_tmp / "state" / "run" / "watchdog.json"
    entry = {"phase": "serving", "healthy": False, "reason": "3 probes failed", "restarts": 2,
             "last_restart_s": time.time() - 30}
    report.write_text(json.dumps({"updated_s": time.time(), "programs": {"web": entry}}))
    fresh = run("status", "-c", str(config))
    assert "WATCHDOG" in fresh.output and "serving" in fresh.output and "(watchdog 2)" in fresh.output
    row = programs_by_name(config)["web"]
    assert row["watchdog"]["reason"] == "3 probes failed" and row["watchdog"]["restarts"] == 2

    report.write_text(json.dumps({"updated_s": time.time() - 3600, "programs": {"web": entry}}))
    stale = run("status", "-c", str(config))
    assert "watchdog report is stale" in stale.output and "WATCHDOG" not in stale.output


def test_ctl_is_supervisorctl_on_this_stack(stack, short_tmp):
    import subprocess

    port = free_port()
    config = stack([program_toml("web", server_command(port), health_port=port)])
    assert run("up", "-c", str(config)).exit_code == 0
    ours = subprocess.run([sys.executable, "-m", "baremetal", "-c", str(config), "ctl", "status"],
                          capture_output=True, text=True, timeout=30)
    conf = short_tmp / "state" / "supervisor" / "supervisord.conf"
    theirs = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "status"],
                            capture_output=True, text=True, timeout=30)
    assert ours.returncode == theirs.returncode == 0
    assert ours.stdout.split()[:4] == theirs.stdout.split()[:4]       # name, state, "pid", pid
    assert ours.stdout.split()[:2] == ["web", "RUNNING"]
    # Arguments reach supervisorctl untouched, options included.
    tail = subprocess.run([sys.executable, "-m", "baremetal", "ctl", "-c", str(config), "tail", "-100", "web"],
                          capture_output=True, text=True, timeout=30)
    assert tail.returncode == 0 and f"listening on 127.0.0.1:{port}" in tail.stdout


def test_status_imports_nothing_heavy(stack):
    port = free_port()
    config = stack([program_toml("web", server_command(port), health_port=port)])
    assert run("up", "-c", str(config)).exit_code == 0
    import subprocess

    script = ("import sys, runpy\nsys.argv = ['baremetal', 'status', '-c', sys.argv[1]]\n"
              "try: runpy.run_module('baremetal', run_name='__main__')\nexcept SystemExit as e: code = e.code\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('vllm', 'torch', 'fastchat', "
              "'transformers', 'pynvml', 'httpx', 'starlette', 'uvicorn', 'jinja2')), code)")
    result = subprocess.run([sys.executable, "-c", script, str(config)], capture_output=True, text=True, timeout=30)
    assert "running and ready" in result.stdout
    assert result.stdout.strip().endswith("[] 0")
