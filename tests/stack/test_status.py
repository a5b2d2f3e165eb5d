"""What `status` derives: restarts from supervisord's log, the watchdog's report, names, and the views."""

from __future__ import annotations

import json

import psutil
import pytest

from baremetal.cli.status_view import duration_text, format_table, to_json
from baremetal.errors import UsageError
from baremetal.host.processes import program_of
from baremetal.stack.lifecycle import resolve_programs
from baremetal.stack.status import (ProgramStatus, StackStatus, WatchdogEntry, count_spawns, gpu_owners, read_watchdog,
                                    watchdog_gpus)

# Lines as supervisord 4 writes them.
RUN_1 = """2026-01-01 10:00:00,000 INFO supervisord started with pid 100
2026-01-01 10:00:01,000 INFO spawned: 'web' with pid 101
2026-01-01 10:00:01,000 INFO spawned: 'api' with pid 102
"""
RUN_2 = """2026-01-01 11:00:00,000 INFO supervisord started with pid 200
2026-01-01 11:00:01,000 INFO spawned: 'web' with pid 201
2026-01-01 11:00:05,000 WARN exited: web (terminated by SIGKILL; not expected)
2026-01-01 11:00:06,000 INFO spawned: 'web' with pid 202
2026-01-01 11:00:07,000 INFO spawned: 'api' with pid 203
"""


def test_spawns_are_counted_since_the_current_supervisord_started(short_tmp):
    log = short_tmp / "supervisord.log"
    log.write_text(RUN_1 + RUN_2)
    assert count_spawns(log, 200) == {"web": 2, "api": 1}
    assert count_spawns(log, None) == {"web": 2, "api": 1}
    assert count_spawns(log, 100) == {"web": 3, "api": 2}       # what a stale pid would read


def test_spawns_are_counted_across_rotated_logs(short_tmp):
    log = short_tmp / "supervisord.log"
    lines = RUN_2.splitlines(keepends=True)
    log.with_name("supervisord.log.1").write_text(RUN_1 + "".join(lines[:3]))
    log.write_text("".join(lines[3:]))
    assert count_spawns(log, 200) == {"web": 2, "api": 1}


def test_restarts_unknown_without_the_start_line(short_tmp):
    log = short_tmp / "supervisord.log"
    log.write_text(RUN_2)
    assert count_spawns(log, 999) is None
    assert count_spawns(short_tmp / "missing.log", 1) is None


def test_watchdog_report_is_used_only_while_fresh(short_tmp):
    path = short_tmp / "watchdog.json"
    entry = {"phase": "loading", "healthy": False, "reason": "model loading", "restarts": 1, "last_restart_s": None}
    path.write_text(json.dumps({"updated_s": 1000.0, "programs": {"web": entry}}))
    views, age_s, fresh = read_watchdog(path, now_s=1005.0, max_age_s=10)
    assert fresh and age_s == 5 and views["web"] == WatchdogEntry("loading", False, "model loading", 1, None)
    views, age_s, fresh = read_watchdog(path, now_s=1100.0, max_age_s=10)
    assert not fresh and age_s == 100 and views == {}
    path.write_text("{half a file")
    assert read_watchdog(path, 1000.0, 10) == ({}, None, False)
    assert read_watchdog(short_tmp / "none.json", 1000.0, 10) == ({}, None, False)


@pytest.mark.parametrize("seconds, text", [(None, "-"), (0, "0s"), (59.9, "59s"), (61, "1m1s"), (3600, "1h0m"),
                                           (3 * 86400 + 7200, "3d2h")])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


@pytest.mark.parametrize("names, expected", [
    (["web"], ["web"]),
    (["gpt-4"], ["vllm-gpt-4"]),
    (["emb"], ["emb-a", "emb-b"]),                   # replicas of one model
    (["web", "web", "gpt-4"], ["web", "vllm-gpt-4"]),
])
def test_resolve_programs(names, expected):
    programs = ["web", "vllm-gpt-4", "emb-a", "emb-b"]
    models = {"gpt-4": ["vllm-gpt-4"], "emb": ["emb-a", "emb-b"]}
    assert resolve_programs(names, programs, models) == expected


def test_resolve_unknown_lists_programs_and_models():
    with pytest.raises(UsageError) as raised:
        resolve_programs(["web", "gtp-4"], ["web", "vllm-gpt-4"], {"gpt-4": ["vllm-gpt-4"]})
    assert str(raised.value) == ("no program or model named 'gtp-4' in this stack; programs: web, vllm-gpt-4; "
                                 "models: gpt-4")
    assert raised.value.exit_code == 2


def _row(name, state="RUNNING", ready=True, detail="/health 200", **kw):
    values = dict(pid=10, uptime_s=65, restarts=0, gpus=(0, 1), port=8001, description="")
    values.update(kw)
    return ProgramStatus(name, state, ready=ready, ready_detail=detail, **values)


def test_table_says_what_is_wrong_below_the_rows():
    status = StackStatus("llm", 9, [
        _row("vllm-a"),
        _row("vllm-b", ready=False, detail="connection refused (not listening yet, or dead)", restarts=2),
        _row("api", state="FATAL", ready=None, pid=None, uptime_s=None, gpus=None,
             description="Exited too quickly (process log may have details)"),
        ProgramStatus("new", "NOT LOADED", None, None, None, "not in supervisord: run `baremetal up`", None, (), 9)])
    text = format_table(status)
    lines = text.splitlines()
    assert lines[0] == "stack 'llm': supervisord pid 9, 1/4 program(s) running and ready"
    assert lines[2].split() == ["PROGRAM", "STATE", "PID", "UPTIME", "READY", "RESTARTS", "GPUS", "PORT"]
    assert lines[3].split() == ["vllm-a", "RUNNING", "10", "1m5s", "yes", "0", "0,1", "8001"]
    assert lines[4].split()[:5] == ["vllm-b", "RUNNING", "10", "1m5s", "NO"]
    assert lines[5].split() == ["api", "FATAL", "-", "-", "-", "0", "-", "8001"]
    assert lines[6].split() == ["new", "NOT", "LOADED", "-", "-", "-", "?", "cpu", "9"]
    assert "vllm-b: probe: connection refused (not listening yet, or dead)" in text
    assert "api: Exited too quickly (process log may have details); `baremetal logs api --stderr` shows why" in text
    assert "new: not in supervisord: run `baremetal up`" in text
    assert not status.healthy


def test_json_has_every_field():
    view = WatchdogEntry("serving", True, "", 0, None)
    data = to_json(StackStatus("llm", 9, [_row("vllm-a", watchdog=view)], 1.5, True))
    assert data["healthy"] and data["watchdog"] == {"age_s": 1.5, "fresh": True}
    row = data["programs"][0]
    assert row["gpus"] == [0, 1] and row["ready"] is True and row["watchdog"]["phase"] == "serving"
    json.dumps(data)


def test_gpu_readings_come_from_a_fresh_watchdog_report_that_had_nvml(short_tmp):
    path = short_tmp / "watchdog.json"
    gpu = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_used_bytes": 3 << 30, "memory_total_bytes": 80 << 30}
    path.write_text(json.dumps({"updated_s": 1000.0, "nvml": None, "programs": {}, "gpus": [gpu]}))
    assert watchdog_gpus(path, 1005.0, 10) == [gpu]
    assert watchdog_gpus(path, 1100.0, 10) is None                   # stale: read NVML instead
    path.write_text(json.dumps({"updated_s": 1000.0, "nvml": "no NVIDIA driver", "programs": {}, "gpus": []}))
    assert watchdog_gpus(path, 1005.0, 10) is None
    assert watchdog_gpus(short_tmp / "none.json", 1005.0, 10) is None


def test_table_ends_with_the_gpus_and_who_holds_their_memory():
    gpu = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "temperature_c": 41, "memory_used_bytes": 60 << 30,
           "memory_total_bytes": 80 << 30, "utilization_gpu_percent": 0, "power_w": 120.0, "power_limit_w": 700.0,
           "ecc_uncorrected_volatile": 0, "throttle_reasons": ["gpu_idle"],
           "processes": [{"pid": 10, "memory_used_bytes": 40 << 30}, {"pid": 77, "memory_used_bytes": 20 << 30}]}
    status = StackStatus("llm", 9, [_row("vllm-a")], gpus=[gpu], gpus_from="watchdog", gpu_owners={10: "vllm-a"})
    lines = format_table(status).splitlines()
    assert lines[-2].split() == ["GPU", "NAME", "TEMP", "MEMORY", "UTIL", "POWER", "ECC", "UNCORR", "THROTTLE",
                                 "PROCESSES"]
    assert lines[-1].split() == ["0", "NVIDIA", "H100", "80GB", "HBM3", "41", "C", "60.0/80.0", "GiB", "0%",
                                 "120/700", "W", "0", "-", "10(vllm-a)", "40.0G,", "77", "20.0G"]
    assert to_json(status)["gpus"] == [gpu] and to_json(status)["gpus_from"] == "watchdog"
    assert to_json(status)["gpu_owners"] == {"10": "vllm-a"}
    assert "NAME" not in format_table(StackStatus("llm", 9, [_row("vllm-a")]))    # no NVML: no GPU table


CHILD_OF_A_PROGRAM = """
import os, subprocess, sys, time
# A child whose own environment says nothing (as vLLM's engine core, whose title overwrote it).
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={"PATH": os.environ["PATH"]})
print(child.pid, flush=True)
time.sleep(60)
"""


def test_gpu_processes_are_owned_by_the_program_whose_tree_holds_them():
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, "-c", CHILD_OF_A_PROGRAM], stdout=subprocess.PIPE, text=True,
                              env={"SUPERVISOR_PROCESS_NAME": "vllm-a", "PATH": "/usr/bin:/bin"})
    try:
        child = int(server.stdout.readline())
        gpus = [{"index": 0, "processes": [{"pid": child, "memory_used_bytes": 1 << 30}, {"pid": 1}]}]
        assert gpu_owners(gpus, [_row("vllm-a", pid=server.pid), _row("api", pid=None)]) == {child: "vllm-a"}
        # Without the program's pid (the `gpus` command has no stack): found through the parent's environment.
        assert gpu_owners(gpus, []) == {child: "vllm-a"}
        assert program_of(child) == "vllm-a" and program_of(1) is None
    finally:
        for process in psutil.Process(server.pid).children(recursive=True) + [psutil.Process(server.pid)]:
            process.kill()
        server.wait()


@pytest.mark.parametrize("phase, ready", [("ready", True), ("loading", False), ("stuck", False),
                                          ("restarting", False), ("stopped", True)])
def test_ready_only_when_the_watchdog_agrees(phase, ready):
    from baremetal.stack.status import agreed_readiness

    view = WatchdogEntry(phase, phase == "ready", "loading for 4s" if phase == "loading" else "", 0, None)
    assert agreed_readiness(True, "/health 200", view)[0] is ready
    assert agreed_readiness(True, "/health 200", None) == (True, "/health 200")     # no fresh report
    assert agreed_readiness(False, "503", view) == (False, "503")


def test_a_program_with_older_settings_is_not_good_and_says_what_to_do():
    status = StackStatus("llm", 9, [_row("api", settings="older"), _row("watchdog", settings="current")])
    text = format_table(status)
    assert not status.healthy and "1/2 program(s) running and ready" in text
    assert "api: runs with older settings than the stack file" in text and "`baremetal up` applies them" in text
    assert to_json(status)["programs"][0]["settings"] == "older"


def test_a_stack_file_not_applied_yet_is_said_first():
    status = StackStatus("llm", 9, [_row("web")], stack_changed=True)
    text = format_table(status)
    assert not status.healthy and to_json(status)["stack_file_changed"] is True
    assert text.splitlines()[-1].startswith("the stack file changed since `baremetal up` last applied it")
