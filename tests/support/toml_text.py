"""Write stack files from Python values in tests (the standard library reads TOML but does not write it)."""

from __future__ import annotations

import json


def toml_value(value) -> str:
    """One TOML value: strings as JSON strings (valid TOML basic strings), tables inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def toml_document(document: dict) -> str:
    """A document of top-level tables ([name]) and arrays of tables ([[name]]); deeper tables inline."""
    lines: list[str] = []
    for name, value in document.items():
        rows = value if isinstance(value, list) else [value]
        header = f"[[{name}]]" if isinstance(value, list) else f"[{name}]"
        for row in rows:
            lines.append(header)
            lines += [f"{key} = {toml_value(item)}" for key, item in row.items()]
            lines.append("")
    return "\n".join(lines)
