"""The restart policy as tables of cases: each case is a script of observations, and what must follow."""

from __future__ import annotations

from dataclasses import replace

import pytest

from baremetal.host.nvml import GpuProcess, GpuSample, XidEvent
from baremetal.supervisord.states import ProcessState
from baremetal.watchdog.policy import (Action, History, Observation, Phase, Policy, backoff_s, decide, gpu_report,
                                       program_gpus, remember, settle)

RUNNING, STOPPED, FATAL, STARTING, BACKOFF = (ProcessState.RUNNING, ProcessState.STOPPED, ProcessState.FATAL,
                                              ProcessState.STARTING, ProcessState.BACKOFF)
POLICY = Policy(interval_s=1.0, unhealthy_after=3, stall_after_s=3.0, busy_stall_after_s=60.0, load_timeout_s=600.0,
                max_restarts=3, restart_window_s=3600.0, restart_backoff_s=10.0)
T0 = 1_000_000.0


def ok(t, **kw):
    return Observation(time_s=T0 + t, state=RUNNING, pid=100, start_s=T0, probe_ok=True, detail="/health 200", **kw)


def bad(t, **kw):
    return Observation(time_s=T0 + t, state=RUNNING, pid=100, start_s=T0, probe_ok=False,
                       detail="connection refused", **kw)


def moving(t):
    """Loading (connection refused) with a sign of progress since the last look."""
    return bad(t, load_progress=("log +120 bytes",))


def stalled(t, cpu_s=0.0, **kw):
    return ok(t, pending=True, progressed=False, cpu_s=cpu_s, pending_detail="1 running, 0 waiting", **kw)


def busy(t):
    return ok(t, pending=True, progressed=True, cpu_s=1.0)


def run(observations, history=None, faults=(), policy=POLICY):
    """Feed observations in order; the decision after each, and the last history."""
    history = history or History()
    decisions = []
    for observation in observations:
        history = remember(history, observation)
        decision = decide(history, observation, faults, policy, observation.time_s)
        history = settle(history, decision, observation.time_s)
        decisions.append(decision)
    return decisions, history


def last(observations, **kw):
    return run(observations, **kw)[0][-1]


def outcome(observations, **kw):
    """The first decision that acts, else the last one."""
    decisions = run(observations, **kw)[0]
    return next((d for d in decisions if d.action != Action.NONE), decisions[-1])


CASES = [
    # name, observations, phase, action, words in the reason
    ("loading: refused connections are not failures", [bad(t) for t in range(0, 300)],
     Phase.LOADING, Action.NONE, "loading for"),
    ("loading slowly: no restart before load_timeout", [moving(t) for t in range(0, 600, 5)][:-1] + [moving(599)],
     Phase.LOADING, Action.NONE, "loading for 9m59s"),
    ("load_timeout expired: failed, restart", [moving(t) for t in range(0, 601, 5)],
     Phase.RESTARTING, Action.RESTART, "load_timeout 10m"),
    ("ready after the first successful probe", [bad(0), bad(1), ok(2)], Phase.READY, Action.NONE, "ready"),
    ("two failures: under the threshold", [ok(0), bad(1), bad(2)], Phase.READY, Action.NONE, "2 probe(s) failed"),
    ("three failures in a row: stuck", [ok(0), bad(1), bad(2), bad(3)], Phase.RESTARTING, Action.RESTART,
     "3 probes failed in a row"),
    ("a success resets the count", [ok(0), bad(1), bad(2), ok(3), bad(4), bad(5)], Phase.READY, Action.NONE, "2 probe"),
    ("stall under stall_after: wait", [ok(0), stalled(1), stalled(2), stalled(2.9)], Phase.READY, Action.NONE,
     "ready"),
    ("stall reaching stall_after with idle processes: stuck", [ok(0)] + [stalled(t) for t in range(1, 9)],
     Phase.RESTARTING, Action.RESTART, "no progress for 3.0s with 1 running, 0 waiting (its processes used 0%"),
    ("busy and progressing for 10 minutes: never restarted", [ok(0)] + [busy(t) for t in range(1, 600)],
     Phase.READY, Action.NONE, "ready"),
    ("computing without counter progress (a compile): wait for busy_stall_after",
     [ok(0)] + [stalled(t, cpu_s=0.9) for t in range(1, 60)], Phase.READY, Action.NONE, "ready"),
    ("computing without progress past busy_stall_after: stuck",
     [ok(0)] + [stalled(t, cpu_s=0.9) for t in range(1, 70)], Phase.RESTARTING, Action.RESTART,
     "no progress for 1m with 1 running, 0 waiting (its processes used 90% of a core; busy_stall_after 1m)"),
    ("a stopped process never counts as computing",
     [ok(0)] + [stalled(t, cpu_s=0.9, stopped=("7 (VLLM::EngineCore)",)) for t in range(1, 9)],
     Phase.RESTARTING, Action.RESTART, "no progress for 3.0s with 1 running, 0 waiting (processes stopped: 7"),
    ("pending that clears is not a stall", [ok(0), stalled(1), stalled(2), ok(3), stalled(4), stalled(5)],
     Phase.READY, Action.NONE, "ready"),
    ("no health check: ready while running", [Observation(T0, RUNNING, 5, T0)], Phase.READY, Action.NONE,
     "no health check"),
    ("stopped by an operator: left alone", [ok(0), Observation(T0 + 1, STOPPED, 0, T0)], Phase.STOPPED,
     Action.NONE, "stopped by an operator"),
    ("supervisord gave up starting it: restart", [Observation(T0, FATAL, 0, T0)], Phase.RESTARTING, Action.RESTART,
     "FATAL"),
    ("BACKOFF is still loading", [Observation(T0, BACKOFF, 0, T0)], Phase.LOADING, Action.NONE, "BACKOFF"),
]


@pytest.mark.parametrize("name, observations, phase, action, words", CASES, ids=[c[0] for c in CASES])
def test_decisions(name, observations, phase, action, words):
    decision = outcome(observations)
    assert (decision.phase, decision.action) == (phase, action), decision.reason
    assert words in decision.reason


def test_hung_process_is_caught_within_five_seconds_of_the_fault():
    """The SIGSTOP case with default settings: pending work, counters still, engine stopped."""
    policy = Policy()                                           # the defaults
    script = [ok(t * 1.0, pending=True, progressed=True, cpu_s=1.0) for t in range(5)]
    fault = 4.5
    script += [stalled(t, stopped=("7 (VLLM::EngineCore)",)) for t in range(5, 12)]
    decisions, _ = run(script, policy=policy)
    first = next(o.time_s for o, d in zip(script, decisions) if d.action == Action.RESTART)
    assert first - (T0 + fault) < 5.0


RESTART_BUDGET = [
    # restart times already spent (seconds before now), whether a restart happens now, phase
    ((), Action.RESTART, Phase.RESTARTING),
    ((-3599.0, -2000.0), Action.RESTART, Phase.RESTARTING),              # 2 of 3, backoff 20 s long past
    ((-3601.0, -3700.0, -3800.0), Action.RESTART, Phase.RESTARTING),     # outside the window: not counted
    ((-5.0,), Action.NONE, Phase.STUCK),                                 # backoff: 10 s after the first
    ((-11.0,), Action.RESTART, Phase.RESTARTING),
    ((-100.0, -15.0), Action.NONE, Phase.STUCK),                         # second backoff: 20 s
    ((-100.0, -21.0), Action.RESTART, Phase.RESTARTING),
    ((-300.0, -200.0, -100.0), Action.STOP, Phase.GIVEN_UP),             # budget spent: give up, stop it
]


@pytest.mark.parametrize("spent, action, phase", RESTART_BUDGET)
def test_restart_budget_and_backoff(spent, action, phase):
    now = 10.0
    history = History(restarts_s=tuple(T0 + now + t for t in spent), start_s=T0 - 50)
    script = [ok(0), bad(8), bad(9), bad(now)]
    decision = last([replace(o, start_s=T0 - 50) for o in script], history=history)
    assert (decision.action, decision.phase) == (action, phase), decision.reason
    if phase == Phase.GIVEN_UP:
        assert "gave up: 3 restarts within 1h (max_restarts 3)" in decision.reason


@pytest.mark.parametrize("restarts, wait", [(0, 0.0), (1, 10.0), (2, 20.0), (3, 40.0), (10, 300.0)])
def test_backoff_doubles_and_is_capped(restarts, wait):
    assert backoff_s(restarts, POLICY) == wait


def test_a_program_that_exits_in_a_loop_is_given_up_and_stays_given_up():
    script, start = [], T0
    for cycle in range(5):                      # supervisord restarts it after each exit
        start = T0 + cycle * 20
        script += [Observation(start + 1, RUNNING, 10 + cycle, start, probe_ok=True, detail="ok")]
    decisions, history = run(script)
    assert [d.action for d in decisions] == [Action.NONE] * 4 + [Action.STOP]
    assert decisions[-1].phase == Phase.GIVEN_UP and "restarted 4 times within 1h" in decisions[-1].reason
    assert history.restarts_total == 4
    # It exits again before the stop lands, and supervisord starts it: still given up (not an operator).
    later = [Observation(start + 5, RUNNING, 99, start + 4, probe_ok=True)]
    decisions, history = run(later, history=history)
    assert decisions[-1].phase == Phase.GIVEN_UP and decisions[-1].action == Action.STOP
    # Stopped; then an operator starts it: a fresh budget.
    decisions, history = run([Observation(start + 6, STOPPED, 0, start + 4),
                              Observation(start + 60, STARTING, 120, start + 59)], history=history)
    assert decisions[0].phase == Phase.GIVEN_UP and decisions[0].action == Action.NONE
    assert decisions[-1].phase == Phase.LOADING and history.restarts_s == ()


def test_watchdog_restarts_are_not_counted_twice():
    decisions, history = run([ok(0), bad(1), bad(2), bad(3)])
    assert decisions[-1].action == Action.RESTART and history.restarts_total == 1 and history.expect_start
    new = Observation(T0 + 5, STARTING, 200, T0 + 4.5)
    decisions, history = run([new], history=history)
    assert history.restarts_total == 1 and not history.expect_start and decisions[-1].phase == Phase.LOADING


def test_hardware_fault_stops_and_never_restarts():
    fault = ("GPU 1 reported Xid 79 (GPU has fallen off the bus)",)
    decisions, history = run([ok(0), ok(1)], faults=fault)
    assert decisions[0].phase == Phase.HARDWARE_FAULT and decisions[0].action == Action.STOP
    assert "Xid 79" in decisions[0].reason and "the GPU is cordoned" in decisions[0].reason
    decisions, history = run([Observation(T0 + 3, STOPPED, 0, T0), Observation(T0 + 60, STOPPED, 0, T0)],
                             history=history)
    assert [(d.phase, d.action) for d in decisions] == [(Phase.HARDWARE_FAULT, Action.NONE)] * 2
    decisions, history = run([Observation(T0 + 100, RUNNING, 300, T0 + 99, probe_ok=True)], history=history)
    assert decisions[-1].phase == Phase.READY           # an operator started it after fixing the GPU


def test_an_operator_stop_and_start_is_followed_not_fought():
    decisions, history = run([ok(0), Observation(T0 + 1, ProcessState.STOPPING, 100, T0),
                              Observation(T0 + 2, STOPPED, 0, T0), Observation(T0 + 30, STOPPED, 0, T0),
                              Observation(T0 + 31, STARTING, 101, T0 + 31)])
    assert [d.action for d in decisions] == [Action.NONE] * 5
    assert [d.phase for d in decisions] == [Phase.READY, Phase.STOPPED, Phase.STOPPED, Phase.STOPPED, Phase.LOADING]
    assert history.restarts_total == 0                 # an operator's stop and start is not a restart


def sample(index, **kw):
    return GpuSample(index=index, time_s=0.0, **kw)


GPU_CASES = [
    # previous, current, xids, faults (by GPU), words in the warnings
    ([sample(0)], [sample(0)], [XidEvent(1, 79, 0.0)], {1: "Xid 79 (GPU has fallen off the bus)"}, ""),
    ([sample(0)], [sample(0)], [XidEvent(0, 13, 0.0)], {}, "Xid 13 (graphics engine exception"),
    ([sample(0, ecc_uncorrected_volatile=0)], [sample(0, ecc_uncorrected_volatile=2)], [],
     {0: "uncorrectable ECC errors rose from 0 to 2"}, ""),
    ([sample(0, ecc_uncorrected_volatile=2)], [sample(0, ecc_uncorrected_volatile=2)], [], {}, ""),
    ([sample(0, ecc_uncorrected_volatile=None)], [sample(0, ecc_uncorrected_volatile=None)], [], {}, ""),
    ([sample(0, remap_failure=False)], [sample(0, remap_failure=True)], [], {0: "row remapping failed"}, ""),
    ([sample(0, temperature_c=88)], [sample(0, temperature_c=91, throttle_reasons=("hw_thermal",))], [], {},
     "GPU 0 is at 91 C, at or over gpu_temp_limit 90 C (throttling: hw_thermal)"),
    ([sample(0, temperature_c=91)], [sample(0, temperature_c=92)], [], {}, ""),     # said once, at the crossing
]


@pytest.mark.parametrize("previous, current, xids, faults, words", GPU_CASES)
def test_gpu_report(previous, current, xids, faults, words):
    report = gpu_report(previous, current, xids, POLICY)
    assert {k: v for k, v in report.faults.items()} == {k: report.faults[k] for k in faults}
    for index, text in faults.items():
        assert text in report.faults[index]
    assert (words in " ".join(report.warnings)) if words else report.warnings == ()


def test_program_gpus_pinned_or_found_by_its_processes():
    samples = [sample(0, processes=(GpuProcess(11, 1),)), sample(1, processes=(GpuProcess(12, 1),))]
    assert program_gpus((1,), samples, ()) == (1,)
    assert program_gpus((), samples, (11,)) == ()
    assert program_gpus(None, samples, (12, 99)) == (1,)
