"""An event's evidence as text, for `top`'s evidence view: the event itself (its message and the details
the watchdog kept: log tails, GPU readings, observations), then, when the event names an evidence folder
(<root>/evidence/...), what that folder holds, each file cut to its first lines."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

FILE_LINES = 60
SKIPPED = ("time", "time_s", "kind", "program", "message", "evidence")


def evidence_text(event: Mapping[str, Any], file_lines: int = FILE_LINES) -> str:
    """Everything known about one event, for a person."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(event.get("time_s") or 0)))
    lines = [f"{stamp}  {event.get('program') or '-'}  {event.get('kind', '?')}", str(event.get("message", "")), ""]
    for key, value in event.items():
        if key in SKIPPED:
            continue
        lines.append(f"--- {key}")
        lines += _value_lines(value)
    folder = event.get("evidence")
    if isinstance(folder, str) and folder:
        lines += ["", f"=== evidence folder {folder}"]
        lines += folder_lines(Path(folder), file_lines)
    elif len(lines) == 3:
        lines.append("(this event carries no evidence)")
    return "\n".join(lines)


def _value_lines(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.splitlines() or [""]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return json.dumps(value, indent=2, default=str).splitlines()


def folder_lines(folder: Path, file_lines: int = FILE_LINES) -> list[str]:
    """The files of an evidence folder, summary.json first, each cut to `file_lines` lines."""
    try:
        files = sorted((path for path in folder.iterdir() if path.is_file()),
                       key=lambda path: (path.name != "summary.json", path.name))
    except OSError as error:
        return [f"(cannot read it: {error.strerror or error})"]
    lines = []
    for path in files:
        lines.append(f"--- {path.name}")
        try:
            with open(path, encoding="utf-8", errors="replace") as stream:
                for index, line in enumerate(stream):
                    if index >= file_lines:
                        lines.append(f"... (more in {path})")
                        break
                    lines.append(line.rstrip("\n"))
        except OSError as error:
            lines.append(f"(cannot read it: {error.strerror or error})")
    return lines or ["(empty)"]
