"""One frame as plain text: what `baremetal top --once` prints without a terminal (piped, CI)."""

from __future__ import annotations

from baremetal.cli.common import table
from baremetal.cli.top import cells
from baremetal.cli.top.frame import Frame

EVENTS_SHOWN = 8
LOG_LINES_SHOWN = 10


def frame_text(frame: Frame, events: int = EVENTS_SHOWN, log_lines: int = LOG_LINES_SHOWN) -> str:
    """Every panel of the view, one after the other."""
    step = cells.per_char(frame.interval_s)
    parts = [cells.headline(frame), "", "PROGRAMS",
             table([cells.program_cells(row) for row in frame.programs], cells.PROGRAM_HEADERS)]
    why = [f"  {row.name}: {row.reason}" for row in frame.programs
           if row.reason and (row.state != "RUNNING" or row.ready is False)]
    parts += why
    parts += ["", "MODELS"]
    if frame.models:
        parts.append(table([cells.model_cells(row, step) for row in frame.models], cells.MODEL_HEADERS))
    if frame.gateway_note:
        parts.append(frame.gateway_note)
    elif not frame.models:
        parts.append("no models in this stack")
    if frame.keys:
        parts += ["", "KEYS", table([cells.key_cells(row) for row in frame.keys], cells.KEY_HEADERS)]
    parts += ["", "GPUS"]
    if frame.gpus:
        parts.append(table([cells.gpu_cells(row, step) for row in frame.gpus], cells.GPU_HEADERS))
        parts.append(f"(from {frame.gpus_from})" if frame.gpus_from == "watchdog" else "")
    else:
        parts.append(cells.no_gpu_line(frame))
    parts += ["", "EVENTS"]
    if frame.events:
        parts.append(table([cells.event_cells(row) for row in frame.events[:events]], cells.EVENT_HEADERS))
    else:
        parts.append("no watchdog events yet")
    if frame.log is not None:
        parts += ["", f"LOG {frame.log.program} ({frame.log.stream}: {frame.log.path})"]
        parts += list(frame.log.lines[-log_lines:]) or ["(empty)"]
    return "\n".join(part for part in parts if part is not None).rstrip() + "\n"
