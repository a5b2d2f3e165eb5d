"""The one writer of values into supervisord's files: each value is encoded for the key it goes to, then read
back with supervisor's own parser (its config parser, `%(here)s` and `%` expansion, the shlex of `command=`,
the key=value lexer of `environment=`) and kept only if it comes back exactly; otherwise it is refused with
the reason. What supervisord does to a value, measured on 4.3 (DESIGN.md):

- every line is cut at ` ;` or ` #` (any whitespace before `;` or `#`: an inline comment), even inside
  quotes, and stripped of whitespace at both ends; `\\r` ends a line like `\\n`;
- the literal text `%(here)s` is replaced before `%%` is undone, then `%(name)s` is expanded (program log
  file names twice over);
- `command=` is split with POSIX shlex; `environment=` with a non-POSIX shlex that has no escapes and strips
  quote characters from both ends of each value.

`command=` can carry any string without control characters (a `;` or `#` after whitespace, or the `(` of
`%(here)s`, starts a new shell-quoted piece). The other keys have no escapes: values they cannot carry are
refused. Checking a value imports supervisor (~70 ms), so plain values (letters, digits, `_./:@+=,-`) skip it.
"""

from __future__ import annotations

import io
import re
import shlex
import unicodedata
from typing import Literal, Mapping, Sequence

Kind = Literal["command", "environment", "value", "logfile", "comment", "section"]

HERE = "/supervisord-here"             # stands for the folder of the file being read (`%(here)s`)
_SAFE = re.compile(r"[A-Za-z0-9_./:@+=,-]*\Z")
_COMMENT_START = re.compile(r"(?<=\s)[;#]")
_NEW_PIECE = re.compile(r"(?<=\s)(?=[;#])|(?<=%)(?=\(here\)s)")
_SECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_QUOTES = "'\""


class UnsafeValue(ValueError):
    """A value supervisord would not read back as written; `reason` says what is not allowed."""

    def __init__(self, what: str, text: object, reason: str):
        self.what, self.text, self.reason = what, text, reason
        super().__init__(f"{what} {text!r}: {reason}")


class Written(str):
    """Text that this module encoded and proved; the templates accept nothing else."""


def control_character(text: str) -> str | None:
    """A description of the first control character (or line/paragraph separator, or unpaired surrogate,
    which no file can hold) in `text`, or None."""
    for character in text:
        category = unicodedata.category(character)
        if category == "Cs":
            return f"the unpaired surrogate U+{ord(character):04X}"
        if category in ("Cc", "Zl", "Zp"):
            names = {"\n": "a line break (\\n)", "\r": "a carriage return (\\r)", "\t": "a tab (\\t)",
                     "\x00": "a NUL byte (\\x00)"}
            return names.get(character, f"the control character U+{ord(character):04X}")
    return None


def percent(text: str, times: int = 1) -> str:
    """`%` written so that `times` rounds of supervisord's %-expansion give it back."""
    return text.replace("%", "%" * (2 ** times))


def quote_argument(argument: str) -> str:
    """One argument for `command=`: shell-quoted in pieces, so that no `;` or `#` follows whitespace and no
    `%(here)s` appears in the line (a piece boundary is a closing and opening quote)."""
    pieces = [piece for piece in _NEW_PIECE.split(argument) if piece] or [""]
    return "".join(shlex.quote(piece) for piece in pieces)


def command(argv: Sequence[str]) -> Written:
    """The value of `command=` for `argv`, proved to split back into exactly `argv`."""
    for index, argument in enumerate(argv):
        _refuse_control(f"command argument {index}", argument)
    encoded = percent(" ".join(quote_argument(str(argument)) for argument in argv))
    decoded = tuple(shlex.split(_read_back(encoded, "command", list(argv))))
    if decoded != tuple(argv):
        raise UnsafeValue("command", list(argv), f"supervisord would run {list(decoded)!r}")
    return Written(encoded)


def environment_pair(name: str, value: str) -> str:
    """NAME="value" for `environment=`: the value in the quote kind it does not hold (there are no escapes)."""
    quote = "'" if '"' in value else '"'
    return f"{name}={quote}{percent(value)}{quote}"


def environment(variables: Mapping[str, str]) -> Written:
    """The value of `environment=`, proved to read back as exactly `variables` (each refused one named)."""
    for name, value in variables.items():
        problem = environment_value_problem(value)
        if problem:
            raise UnsafeValue(f"environment variable {name}", value, problem)
    encoded = ",".join(environment_pair(name, value) for name, value in variables.items())
    if not encoded:
        return Written("")
    from supervisor.datatypes import dict_of_key_value_pairs

    decoded = dict_of_key_value_pairs(_read_back(encoded, "environment", dict(variables)))
    if decoded != dict(variables):
        raise UnsafeValue("environment", dict(variables), f"supervisord would read {decoded!r}")
    return Written(encoded)


def value(text: str, what: str = "value") -> Written:
    """A plain value (a path, a name): proved to read back unchanged."""
    problem = value_problem(text)
    if problem:
        raise UnsafeValue(what, text, problem)
    return Written(percent(text))


def logfile(folder: str, name: str, suffix: str) -> Written:
    """A program's stdout_logfile/stderr_logfile: supervisord expands these twice."""
    text = f"{folder}/{name}{suffix}"
    problem = _problem(text, "logfile")
    if problem:
        raise UnsafeValue("log file", text, problem)
    return Written(percent(text, 2))


def comment(text: str) -> Written:
    """The text of one `; ...` comment line: it must stay on its line and leave the file's keys alone."""
    problem = _problem(text, "comment")
    if problem:
        raise UnsafeValue("comment", text, problem)
    return Written(text)


def section_name(name: str) -> Written:
    """A program's name in `[program:NAME]`, as supervisord's process_or_group_name accepts it."""
    if not _SECTION_NAME.match(name):
        raise UnsafeValue("program name", name, "names use letters, digits, '.', '_' and '-'")
    return Written(name)


def environment_value_problem(text: str) -> str | None:
    """Why `environment=` cannot carry `text` (None when it can)."""
    if '"' in text and "'" in text:
        return "supervisord cannot pass a value holding both ' and \"; set it in a file the program reads"
    if text and (text[0] in _QUOTES or text[-1] in _QUOTES):
        return "supervisord strips quotes at either end of a value; remove them"
    return _problem(text, "environment")


def value_problem(text: str) -> str | None:
    """Why a plain key (directory=, file=, logfile=) cannot carry `text` (None when it can)."""
    return _problem(text, "value")


def _refuse_control(what: str, text: str) -> None:
    found = control_character(text)
    if found:
        raise UnsafeValue(what, text, f"holds {found}; supervisord's files have one value per line")


def _problem(text: str, kind: Kind) -> str | None:
    """None when `text` reads back exactly as the given kind of value, else what is wrong (most specific first)."""
    found = control_character(text)
    if found:
        return f"holds {found}; supervisord's files have one value per line"
    if kind != "comment" and _SAFE.match(text):
        return None
    try:
        if kind == "comment":
            _read_back("x", "comment", "x", comment_line=text)
            return None
        if kind == "environment":
            from supervisor.datatypes import dict_of_key_value_pairs

            decoded = dict_of_key_value_pairs(_read_back(environment_pair("X", text), kind, text)).get("X")
        else:
            decoded = _read_back(percent(text, 2 if kind == "logfile" else 1), kind, text)
    except UnsafeValue as error:
        return _why(text) or error.reason
    except ValueError as error:
        return _why(text) or f"supervisord cannot read it: {error}"
    return None if decoded == text else (_why(text) or f"supervisord would read it back as {decoded!r}")


def _why(text: str) -> str | None:
    """A reason an operator can act on, for a value that does not come back as written."""
    if _COMMENT_START.search(text):
        return "a space before ';' or '#' starts a comment in supervisord's files, which would cut the value there"
    if "%(here)s" in text:
        return "supervisord replaces '%(here)s' with its config folder, even when written '%%(here)s'"
    if text != text.strip():
        return "supervisord strips spaces at either end of a value; remove them"
    return None


def _read_back(encoded: str, kind: Kind, original: object, comment_line: str | None = None) -> str:
    """`encoded` as supervisord reads it from `key=encoded` in a program section: through its config parser
    (a real file's universal newlines), `%(here)s`, and one (log files: two) rounds of %-expansion."""
    import configparser

    from supervisor.options import UnhosedConfigParser, expand

    lines = ["[program:proof]"] + ([f"; {comment_line}"] if comment_line is not None else []) + [f"key={encoded}"]
    text = "\n".join(lines) + "\n"
    parser = UnhosedConfigParser()
    try:
        parser.read_file(io.StringIO(text, newline=None))
    except configparser.Error as error:
        raise UnsafeValue(kind, original, f"supervisord cannot read it: {error}") from None
    if parser.sections() != ["program:proof"] or parser.options("program:proof") != ["key"] \
            or len(io.StringIO(text, newline=None).readlines()) != len(lines):
        raise UnsafeValue(kind, original, "it would change the lines of supervisord's file")
    parser.expand_here(HERE)
    expansions = {"here": HERE, "program_name": "proof", "group_name": "proof", "host_node_name": "node",
                  "process_num": 0, "numprocs": 1}
    read = parser.get("program:proof", "key")
    for _round in range(2 if kind == "logfile" else 1):
        read = expand(read, expansions, "key")
    return read


def sections(content: str) -> list[str]:
    """The sections of a whole file as supervisord's parser finds them (an injected one would show here)."""
    import configparser

    from supervisor.options import UnhosedConfigParser

    parser = UnhosedConfigParser()
    try:
        parser.read_file(io.StringIO(content, newline=None))
    except configparser.Error as error:
        return [f"(unreadable: {error})"]
    return parser.sections()
