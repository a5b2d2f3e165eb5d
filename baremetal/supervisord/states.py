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


# A process that is not alive and will not come back by itself.
STOPPED_STATES = frozenset({ProcessState.STOPPED, ProcessState.EXITED, ProcessState.FATAL, ProcessState.UNKNOWN})
# A process that is not alive (an EXITED one supervisord may start again: autorestart).
DOWN_STATES = frozenset({ProcessState.STOPPED, ProcessState.EXITED, ProcessState.FATAL})
# Not alive, and supervisord will not start it again by itself.
STAYS_DOWN_STATES = frozenset({ProcessState.STOPPED, ProcessState.FATAL})
# A process that lives now: started, running, or stopping (what a restart must stop first).
ALIVE_STATES = frozenset({ProcessState.RUNNING, ProcessState.STARTING, ProcessState.BACKOFF, ProcessState.STOPPING})
# A process that started or is starting, as `up` waits for it (BACKOFF is a failed start).
LIVE_STATES = frozenset({ProcessState.STARTING, ProcessState.RUNNING})
# States that mean supervisord gave up starting the process.
FAILED_STATES = frozenset({ProcessState.FATAL})
