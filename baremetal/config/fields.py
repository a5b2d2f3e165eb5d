"""Reading one TOML table field by field, recording every problem with its path (no raw dicts escape)."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from typing import Any

from baremetal.config.types import FieldError, type_name
from baremetal.supervisord.syntax import control_character
from baremetal.errors import Issue

MISSING: Any = object()

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_.-]+)\s*=')
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def _unquote(key: str) -> str:
    return key[1:-1] if key[:1] in "\"'" else key


class LineIndex:
    """Line numbers of tables and keys in a TOML text, keyed by field path (`model[1].port`).

    tomllib gives no positions; this is a light scan of headers and `key =` lines, good enough to
    point an operator at the right line. Unknown paths fall back to their nearest known parent.
    """

    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        counters: dict[str, int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header and not _KEY.match(line):
                name = ".".join(_unquote(part.strip()) for part in header.group(2).split("."))
                if header.group(1) == "[[":
                    counters[name] = counters.get(name, -1) + 1
                    table = f"{name}[{counters[name]}]"
                else:
                    table = name
                self.lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                path = f"{table}.{_unquote(key.group(1))}" if table else _unquote(key.group(1))
                self.lines.setdefault(path, number)

    def find(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


def control_characters(data: Any) -> list[tuple[str, str]]:
    """(field path, message) for every key and string of a parsed TOML document that holds a control
    character: one rule for every field, including those added later. Walks without recursion."""
    found = []
    pending: list[tuple[str, Any]] = [("", data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            character = control_character(value)
            if character:
                found.append((path, f"holds {character}; control characters are not allowed in a stack file's "
                                    "strings (they would reach supervisord's files, logs and terminals)"))
        elif isinstance(value, dict):
            for key, item in value.items():
                shown = key if _BARE_KEY.match(key) else json.dumps(key)
                child = f"{path}.{shown}" if path else shown
                if control_character(key):
                    found.append((child, f"this key holds {control_character(key)}; control characters are not "
                                         "allowed in a stack file"))
                pending.append((child, item))
        elif isinstance(value, list):
            pending += [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    return sorted(found)


def _related(one: str, other: str) -> bool:
    """Whether two field paths are the same field, or one holds the other."""
    if one == other:
        return True
    shorter, longer = sorted((one, other), key=len)
    return bool(shorter) and longer.startswith((shorter + ".", shorter + "["))


class Problems:
    """The list of issues found so far, with line numbers looked up as they are added. A field refused for a
    control character gets no second issue from its own converter."""

    def __init__(self, lines: LineIndex):
        self.issues: list[Issue] = []
        self.warnings: list[Issue] = []
        self.lines = lines
        self.refused: set[str] = set()

    def refuse(self, path: str, message: str) -> None:
        """Record a problem for `path` that no later problem of the same field repeats."""
        self.refused.add(path)
        self.issues.append(Issue(path, message, self.lines.find(path)))

    def add(self, path: str, message: str) -> None:
        if any(_related(path, refused) for refused in self.refused):
            return
        self.issues.append(Issue(path, message, self.lines.find(path)))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Issue(path, message, self.lines.find(path)))


class Table:
    """One TOML table being read: `take` each known key, then `finish` reports the unknown ones."""

    def __init__(self, data: Any, path: str, problems: Problems):
        self.path = path
        self.problems = problems
        self.taken: set[str] = set()
        if isinstance(data, dict):
            self.data = data
        else:
            problems.add(path, f"expected a table, got {type_name(data)}")
            self.data = {}

    def field_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def take(self, key: str, convert: Callable[[Any], Any], default: Any = None, required: bool = False) -> Any:
        """The converted value of `key`, or `default` when absent or invalid (the problem is recorded)."""
        self.taken.add(key)
        if key not in self.data:
            if required:
                self.problems.add(self.field_path(key), "is required")
            return default
        try:
            return convert(self.data[key])
        except FieldError as error:
            self.problems.add(self.field_path(key), str(error))
            return default

    def finish(self) -> None:
        """Record every key that was not taken, with a did-you-mean."""
        for key in self.data:
            if key in self.taken:
                continue
            message = "unknown key"
            close = difflib.get_close_matches(key, sorted(self.taken), n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
            else:
                message += f"; known keys here: {', '.join(sorted(self.taken))}"
            self.problems.add(self.field_path(key), message)
