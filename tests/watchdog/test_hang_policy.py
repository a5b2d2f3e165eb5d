"""Stalled starts and GPU-spin stalls in the pure policy, as tables (the same harness as test_policy)."""

from __future__ import annotations

import pytest

from baremetal.watchdog.policy import Action, Phase, Policy
from tests.watchdog.test_policy import POLICY, bad, moving, ok, outcome, stalled

STALL = Policy(**{**POLICY.__dict__, "start_stall_after_s": 60.0})


@pytest.mark.parametrize("name,observations,phase,action,words,cause", [
    ("a start with no sign of progress is restarted after start_stall_after",
     [bad(t) for t in range(0, 61)], Phase.RESTARTING, Action.RESTART, "no sign of loading progress "
     "for 1m (its log, GPU memory, CPU time and reads all still; start_stall_after 1m)", "start_stalled"),
    ("just under start_stall_after: still loading",
     [bad(t) for t in range(0, 60)], Phase.LOADING, Action.NONE, "loading for 59.0s", None),
    ("progress resets the clock: 50s quiet after a sign at 40s is not a stall",
     [bad(t) for t in range(0, 40)] + [moving(40)] + [bad(t) for t in range(41, 91)], Phase.LOADING, Action.NONE,
     "loading for 1m30s", None),
    ("... but 60s quiet after it is",
     [bad(t) for t in range(0, 40)] + [moving(40)] + [bad(t) for t in range(41, 101)], Phase.RESTARTING,
     Action.RESTART, "no sign of loading progress for 1m", "start_stalled"),
    ("a slow load that keeps moving runs into load_timeout only",
     [moving(t) for t in range(0, 601, 10)], Phase.RESTARTING, Action.RESTART, "load_timeout 10m", "load_timeout"),
    ("a ready program is never judged by load progress",
     [ok(0)] + [ok(t) for t in range(1, 200)], Phase.READY, Action.NONE, "ready", None),
])
def test_start_stall(name, observations, phase, action, words, cause):
    decision = outcome(observations, policy=STALL)
    assert (decision.phase, decision.action) == (phase, action), decision.reason
    assert words in decision.reason
    assert decision.cause == cause


SPIN = "GPU 0: SM 98%, memory 0%, 80 W of 700 W over 5 reading(s)"


@pytest.mark.parametrize("name,observations,action,words", [
    ("computing with no progress: busy_stall_after (60s) applies",
     [ok(0)] + [stalled(t, cpu_s=1.0) for t in range(1, 40)], Action.NONE, None),
    ("computing with no progress while the GPUs spin: stuck after 10s",
     [ok(0)] + [stalled(t, cpu_s=1.0, gpu_spin=SPIN) for t in range(1, 13)], Action.RESTART,
     "GPUs spinning 10.0s"),
])
def test_gpu_spin_shortens_the_busy_limit(name, observations, action, words):
    decision = outcome(observations)
    assert decision.action == action, decision.reason
    if words:
        assert words in decision.reason and SPIN in decision.reason and decision.cause == "no_progress"
