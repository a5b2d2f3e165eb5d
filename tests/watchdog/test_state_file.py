"""The state file contract: written atomically, read back, and marked stale when the watchdog is gone."""

from __future__ import annotations

import os

from baremetal.watchdog.state_file import read_state, write_state


def test_state_round_trip_and_staleness(tmp_path):
    path = tmp_path / "run" / "watchdog.json"
    programs = {"vllm-chat": {"phase": "ready", "healthy": True, "reason": "ready", "restarts": 0,
                              "last_restart_s": None}}
    write_state(path, programs, [{"index": 0, "temperature_c": 40}], 1000.0, 1.0, None)
    state = read_state(path, now_s=1002.0)
    assert state["programs"] == programs and state["pid"] == os.getpid() and state["updated_s"] == 1000.0
    assert state["gpus"][0]["temperature_c"] == 40 and state["stale"] is False
    assert read_state(path, now_s=1010.0)["stale"] is True
    assert [p.name for p in path.parent.iterdir()] == ["watchdog.json"]      # no temporary files left


def test_missing_or_damaged_state_reads_as_none(tmp_path):
    assert read_state(tmp_path / "nothing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert read_state(tmp_path / "bad.json") is None
