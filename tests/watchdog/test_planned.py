"""An operator's planned change, as the watchdog sees it in drain.json: hands off while it lasts, the
new process is not a restart against the budget. Pure."""

from __future__ import annotations

import pytest

from baremetal.stack.drain import Change, DrainEntry
from baremetal.stack.gateway_view import BackendView
from baremetal.supervisord.states import ProcessState
from baremetal.watchdog.planned import change_words, hands_off, planned
from baremetal.watchdog.policy import Action, Decision, History, Observation, Phase, remember

NOW = 1_800_000_000.0
RESTART = Change(NOW - 10, "restart", started_s=NOW - 2)


def observed(state=ProcessState.RUNNING, start_s=NOW - 1.5, **fields) -> Observation:
    return Observation(time_s=NOW, state=state, pid=7, start_s=start_s, probe_ok=True, **fields)


def test_the_process_an_operator_started_is_not_a_restart_to_count():
    history = History(start_s=NOW - 600, ready_s=NOW - 590, phase=Phase.READY)
    mine = planned(observed(), history, RESTART)
    assert mine.planned_start
    after = remember(history, mine)
    assert after.restarts_s == () and after.restarts_total == 0 and after.start_s == NOW - 1.5
    crashed = remember(history, planned(observed(), history, None))      # the same start with no change: counted
    assert crashed.restarts_total == 1
    late = planned(observed(start_s=NOW + 120), history, RESTART)       # long after the operator's start
    assert not late.planned_start
    same = planned(observed(start_s=NOW - 600), history, RESTART)       # not a new process
    assert not same.planned_start


GOING = Decision(Phase.RESTARTING, False, "no progress for 3.0s", Action.RESTART)
CASES = {
    "no change: untouched": (None, ProcessState.RUNNING, GOING, GOING),
    "done: untouched": (Change(NOW - 10, "restart", done_s=NOW - 1), ProcessState.RUNNING, GOING, GOING),
    "a crashed CLI lets go": (Change(NOW - 5000, "restart"), ProcessState.RUNNING, GOING, GOING),
    "running: no action": (Change(NOW - 10, "restart"), ProcessState.RUNNING, GOING,
                           Decision(Phase.RESTARTING, False, "no progress for 3.0s; not acting: being changed by an "
                                    "operator (baremetal restart)", Action.NONE)),
    "removed by up: an operator's stop": (Change(NOW - 10, "update"), ProcessState.UNKNOWN,
                                          Decision(Phase.FAILED, False, "unknown (exit status None)"),
                                          Decision(Phase.STOPPED, False, "being changed by an operator (baremetal "
                                                   "up): stopped for now; the watchdog leaves it alone")),
    "stopping": (Change(NOW - 10, "stop"), ProcessState.STOPPING, Decision(Phase.STOPPED, False, "stopping"),
                 Decision(Phase.STOPPED, False, "being changed by an operator (baremetal stop): stopped for now; "
                          "the watchdog leaves it alone")),
}


@pytest.mark.parametrize("change, state, decision, expected", CASES.values(), ids=CASES.keys())
def test_hands_off_while_an_operator_changes_it(change, state, decision, expected):
    assert hands_off(decision, observed(state), change, NOW, max_s=2400) == expected


def test_change_words():
    assert change_words(Change(NOW, "restart"), None, None) == (
        "`baremetal restart` by an operator: the watchdog keeps its hands off until it is done")
    words = change_words(Change(NOW, "update"), DrainEntry(NOW, NOW + 30, "update"), BackendView(in_flight=3))
    assert words.startswith("a change applied by `baremetal up` by an operator")
    assert words.endswith("taken out of the gateway's routing first (3 request(s) in flight, 30s to finish)")
