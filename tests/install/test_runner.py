"""The real subprocess seam: lines stream as they come, silent steps still tick, failures are results."""

from __future__ import annotations

import sys

from baremetal.install.runner import SubprocessRunner


def test_lines_stream_in_order_with_ticks_while_silent():
    seen, ticks = [], []
    script = "import sys, time; print('one', flush=True); time.sleep(0.6); print('two', file=sys.stderr)"
    result = SubprocessRunner(tick_s=0.2).run([sys.executable, "-c", script], on_line=seen.append,
                                              on_tick=ticks.append)
    assert result.ok and result.lines == ("one", "two") and seen == ["one", "two"]
    assert len(ticks) >= 2 and ticks == sorted(ticks)


def test_exit_status_environment_and_missing_program():
    result = SubprocessRunner().run([sys.executable, "-c", "import os, sys; print(os.environ['BM_X']); sys.exit(3)"],
                                    {"BM_X": "given"})
    assert (result.returncode, result.lines) == (3, ("given",)) and not result.ok
    missing = SubprocessRunner().run(["/nonexistent/python3", "-V"])
    assert missing.returncode == 127 and "cannot run /nonexistent/python3" in missing.lines[0]


def test_a_command_past_its_timeout_is_killed():
    result = SubprocessRunner().run([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert result.returncode != 0 and result.elapsed_s < 10 and "killed after 0.5s" in result.lines[-1]
