"""supervisord's process and daemon states as enums, with named sets. No dependencies."""

from __future__ import annotations

from enum import IntEnum


class ProcessState(IntEnum):
    """supervisord process states (same numbers as supervisor.states.ProcessStates)."""

    STOPPED = 0
    STARTING = 10
    RUNNING = 20
    BACKOFF = 30
    STOPPING = 40
    EXITED = 100
    FATAL = 200
    UNKNOWN = 1000


class SupervisorState(IntEnum):
    """supervisord daemon states (supervisor.states.SupervisorStates)."""

    FATAL = 2
    RUNNING = 1
    RESTARTING = 0
    SHUTDOWN = -1


# A process that is, or is about to be, alive.
RUNNING_STATES = frozenset({ProcessState.RUNNING, ProcessState.BACKOFF, ProcessState.STARTING})
# A process that is not alive and will not come back by itself.
STOPPED_STATES = frozenset({ProcessState.STOPPED, ProcessState.EXITED, ProcessState.FATAL, ProcessState.UNKNOWN})
# States in which supervisord accepts a signal for the process.
SIGNALLABLE_STATES = frozenset({ProcessState.RUNNING, ProcessState.STARTING, ProcessState.STOPPING})
# States that mean supervisord gave up starting the process.
FAILED_STATES = frozenset({ProcessState.FATAL})
