"""Readiness decisions (a pure function, tested with a table) and how progress is shown."""

from __future__ import annotations

import pytest

from baremetal.stack.probes import ProbeResult
from baremetal.stack.readiness import MAX_CRASHES, ProgressLines, Track, next_track
from baremetal.supervisord.client import ProcessInfo
from baremetal.supervisord.states import ProcessState as S


def info(state: S, pid: int = 100, start_s: float = 1000.0, now_s: float = 1030.0,
         description: str = "") -> ProcessInfo:
    return ProcessInfo(name="p", group="p", state=state, pid=pid, start_s=start_s, stop_s=0, now_s=now_s,
                       exit_status=0, spawn_error="", description=description, stdout_logfile="", stderr_logfile="")


OK = ProbeResult(True, 0.01, "/health 200", 200)
BAD = ProbeResult(False, 0.01, "connection refused (not listening yet, or dead)")

CASES = [
    # (name, previous, info, probe, has_probe, waited_s) -> (ready, failure substring or None, crashes)
    ("running with no probe is ready", Track(), info(S.RUNNING), None, False, 1, (True, None, 0)),
    ("running, probe not answered yet", Track(), info(S.RUNNING), None, True, 1, (False, None, 0)),
    ("running, probe passes", Track(S.RUNNING, 100), info(S.RUNNING), OK, True, 2, (True, None, 0)),
    ("running, probe fails: still loading", Track(S.RUNNING, 100), info(S.RUNNING), BAD, True, 2, (False, None, 0)),
    ("ready stays ready without a new probe", Track(S.RUNNING, 100, ready=True), info(S.RUNNING), None, True, 3,
     (True, None, 0)),
    ("a new process is not ready until probed", Track(S.RUNNING, 100, ready=True), info(S.RUNNING, pid=200), None,
     True, 3, (False, None, 1)),
    ("starting is not ready", Track(), info(S.STARTING), None, False, 1, (False, None, 0)),
    ("backoff is supervisord's retry: no failure yet", Track(S.STARTING, 100), info(S.BACKOFF), None, True, 2,
     (False, None, 0)),
    ("fatal fails", Track(S.BACKOFF, 100), info(S.FATAL, description="Exited too quickly"), None, True, 5,
     (False, "gave up starting it (Exited too quickly)", 0)),
    ("exit after running counts a crash", Track(S.RUNNING, 100), info(S.EXITED), None, True, 5, (False, None, 1)),
    ("the third crash fails", Track(S.RUNNING, 100, crashes=MAX_CRASHES - 1), info(S.EXITED, description="exit 1"),
     None, True, 9, (False, f"exited {MAX_CRASHES} times", MAX_CRASHES)),
    ("not loaded fails", Track(), None, None, True, 1, (False, "not loaded in supervisord", 0)),
    ("stopped right after add: wait for autostart", Track(), info(S.STOPPED), None, True, 0.5, (False, None, 0)),
    ("stopped for long fails", Track(S.STOPPED), info(S.STOPPED), None, True, 6, (False, "is stopped", 0)),
    ("stopped after running fails", Track(S.RUNNING, 100), info(S.STOPPED), None, True, 2, (False, "is stopped", 0)),
]


@pytest.mark.parametrize("name, previous, current, probe, has_probe, waited_s, expected", CASES,
                         ids=[case[0] for case in CASES])
def test_advance(name, previous, current, probe, has_probe, waited_s, expected):
    track = next_track(previous, current, probe, has_probe, waited_s)
    ready, failure, crashes = expected
    assert track.ready is ready
    assert track.crashes == crashes
    if failure is None:
        assert track.failure is None
    else:
        assert failure in track.failure


def test_loading_time_is_the_process_age():
    assert next_track(Track(), info(S.RUNNING, start_s=1000, now_s=1045), None, True, 1).loading_s == 45


def test_progress_without_a_terminal_prints_plain_lines_at_intervals():
    written: list[str] = []
    progress = ProgressLines(written.append, is_tty=False, every_s=15)
    progress.changed("vllm-a", Track(), Track(S.STARTING, 42))
    for now_s in range(0, 31):
        progress.loading({"vllm-a": float(now_s)}, float(now_s))
    progress.changed("vllm-a", Track(S.RUNNING, 42), Track(S.RUNNING, 42, ready=True, detail="/v1/completions 200"))
    text = "".join(written)
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines() == ["  vllm-a                   STARTING (pid 42)",
                                 "still loading: vllm-a (15s)",
                                 "still loading: vllm-a (30s)",
                                 "  vllm-a                   ready (/v1/completions 200)"]


def test_progress_on_a_terminal_redraws_one_line():
    written: list[str] = []
    progress = ProgressLines(written.append, is_tty=True)
    progress.loading({"vllm-a": 3.0}, 3.0)
    progress.loading({"vllm-a": 4.0}, 4.0)
    progress.line("done")
    assert "".join(written) == "still loading: vllm-a (3s)\r\x1b[Kstill loading: vllm-a (4s)\r\x1b[Kdone\n"


def test_progress_is_quiet_about_programs_already_running():
    written: list[str] = []
    progress = ProgressLines(written.append, is_tty=False)
    progress.changed("web", Track(), Track(S.RUNNING, 7))
    assert written == []
    progress.changed("web", Track(S.RUNNING, 7), Track(S.RUNNING, 7, ready=True, detail="no probe"))
    assert written == ["  web                      ready (no probe)\n"]
