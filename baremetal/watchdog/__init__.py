"""The watchdog: the loop (loop), what it sees of each program (observe, engine_progress), the pure rules
that decide (policy), clean restarts (restart), and what it tells (events, state_file, metrics)."""
