"""Small converters from TOML values to typed values; each raises FieldError naming what was expected."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
SIZE_UNITS_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
                    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)\Z")


class FieldError(ValueError):
    """A value that does not fit its field; the reader adds the field path."""


def type_name(value: Any) -> str:
    """The TOML name of a Python value's type, for messages."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError(f"expected a string, got {type_name(value)} ({value!r})")
    return value


def nonempty_string(value: Any) -> str:
    text = string(value)
    if not text.strip():
        raise FieldError("must not be empty")
    return text


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"expected true or false, got {type_name(value)} ({value!r})")
    return value


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    """A converter for whole numbers within [minimum, maximum]."""

    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"expected an integer, got {type_name(value)} ({value!r})")
        if minimum is not None and value < minimum:
            raise FieldError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise FieldError(f"must be at most {maximum}, got {value}")
        return value

    return convert


def number(minimum: float | None = None, maximum: float | None = None) -> Callable[[Any], float]:
    """A converter for integers or floats within [minimum, maximum]."""

    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(f"expected a number, got {type_name(value)} ({value!r})")
        if minimum is not None and value < minimum:
            raise FieldError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise FieldError(f"must be at most {maximum}, got {value}")
        return float(value)

    return convert


port = integer(1, 65535)


def choice(*options: str) -> Callable[[Any], str]:
    """A converter accepting one of `options`."""

    def convert(value: Any) -> str:
        text = string(value)
        if text not in options:
            raise FieldError(f"expected one of {', '.join(repr(o) for o in options)}, got {text!r}")
        return text

    return convert


DURATION_MAX_S = 365 * 86400.0
_BARE_NUMBER = re.compile(r"\d+(?:\.\d+)?\Z")


def duration_s(value: Any) -> float:
    """Seconds from a duration: a string with units ("500ms", "2s", "5m", "1h", "1h30m"), or a bare number
    of seconds (90, 1.5 or "90", as `timeout 90` and systemd take it). At most 365 days."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise FieldError(f"expected a duration such as \"500ms\", \"2s\" or 90 (seconds), got {value!r}")
        total = float(value)
        if total < 0:
            raise FieldError(f"a duration cannot be negative, got {value!r}")
    else:
        total = _duration_text_s(value)
    if total > DURATION_MAX_S:
        raise FieldError(f"durations are at most 365 days, got {value!r}")
    return total


def _duration_text_s(value: Any) -> float:
    text = string(value).strip().lower().replace(" ", "")
    if _BARE_NUMBER.match(text):
        return float(text)
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * DURATION_UNITS_S[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise FieldError(f'expected a duration such as "500ms", "2s", "5m", "1h" or a number of seconds, got {value!r}')
    return total


def duration_at_least(minimum_s: float, why: str = "") -> Callable[[Any], float]:
    """A duration converter with a floor (a watchdog ticking every 0.1 ms would spin a core)."""

    def convert(value: Any) -> float:
        seconds = duration_s(value)
        if seconds < minimum_s:
            raise FieldError(f"must be at least {format_duration(minimum_s)}{why}, got {value!r}")
        return seconds

    return convert


def format_duration(seconds: float) -> str:
    """"100ms", "1s", "10m": the shortest way to write a floor."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def size_bytes(value: Any) -> int:
    """Bytes from a size string with a unit: "512MiB", "2GiB", "100MB" (powers of 1024 for *iB)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise FieldError(f'sizes need a unit, e.g. "{value}MiB" (units: B, KB, MB, GB, KiB, MiB, GiB, TiB)')
    match = _SIZE.match(string(value).strip().lower())
    if not match or match.group(2) not in SIZE_UNITS_BYTES:
        raise FieldError(f'expected a size such as "512MiB" or "2GiB", got {value!r}')
    return int(float(match.group(1)) * SIZE_UNITS_BYTES[match.group(2)])


def ip_address(value: Any) -> str:
    """An IPv4 or IPv6 address literal (Ray and NCCL bind addresses, not names)."""
    import ipaddress

    text = nonempty_string(value).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise FieldError(f"expected an IP address such as \"10.0.0.1\", got {text!r}; Ray binds addresses, "
                         "not host names") from None


def gpu_list(value: Any) -> tuple[int, ...]:
    """GPU indices: an array of distinct non-negative integers ([] means CPU)."""
    if not isinstance(value, list):
        raise FieldError(f"expected an array of GPU indices such as [0, 1], got {type_name(value)} ({value!r})")
    seen: list[int] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise FieldError(f"GPU indices are integers, got {item!r}")
        if item < 0:
            raise FieldError(f"GPU indices are 0 or more, got {item}")
        if item in seen:
            raise FieldError(f"GPU {item} is listed twice")
        seen.append(item)
    return tuple(seen)


def string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise FieldError(f"expected an array of strings, got {type_name(value)} ({value!r})")
    for item in value:
        if not isinstance(item, str):
            raise FieldError(f"expected an array of strings, but {item!r} is {type_name(item)}")
    return tuple(value)


def nonempty_string_list(value: Any) -> tuple[str, ...]:
    items = string_list(value)
    if not items:
        raise FieldError("must not be empty")
    return items


def environment_value(value: Any) -> str:
    """A string that supervisord's `environment=` carries unchanged (e.g. `timezone`, which becomes TZ)."""
    from baremetal.supervisord.syntax import environment_value_problem

    text = string(value)
    problem = environment_value_problem(text)
    if problem:
        raise FieldError(problem)
    return text


def supervisor_value(value: Any) -> str:
    """A non-empty string that a plain supervisord key (`directory=`) carries unchanged."""
    from baremetal.supervisord.syntax import value_problem

    text = nonempty_string(value)
    problem = value_problem(text)
    if problem:
        raise FieldError(problem)
    return text


def environment(value: Any) -> dict[str, str]:
    """Environment variables: a table of NAME = value (numbers and booleans become strings)."""
    if not isinstance(value, dict):
        raise FieldError(f'expected a table such as {{ NAME = "value" }}, got {type_name(value)}')
    result: dict[str, str] = {}
    for name, raw in value.items():
        if not _ENV_NAME.match(name):
            raise FieldError(f"{name!r} is not a valid environment variable name")
        if isinstance(raw, bool):
            text = "1" if raw else "0"
        elif isinstance(raw, (int, float, str)):
            text = str(raw)
        else:
            raise FieldError(f"{name}: expected a string or number, got {type_name(raw)}")
        try:
            result[name] = environment_value(text)
        except FieldError as error:
            raise FieldError(f"{name}: {error}") from None
    return result


def name(value: Any) -> str:
    """A name for programs, envs and stacks: letters, digits, '.', '_' and '-'."""
    text = string(value)
    if not NAME.match(text):
        raise FieldError(f"{text!r}: names use letters, digits, '.', '_' and '-', and start with a letter or digit")
    return text


def timezone(value: Any) -> str:
    """A time zone name for TZ (it goes into supervisord's environment=)."""
    text = environment_value(nonempty_string(value))
    if text != text.strip() or " " in text:
        raise FieldError(f"{text!r}: a time zone is a name such as \"Europe/Paris\" or \"UTC\", without spaces")
    return text


def command(value: Any) -> tuple[str, ...]:
    """A command as an array of arguments (never a string for a shell)."""
    if isinstance(value, str):
        raise FieldError('give the command as an array of arguments, e.g. ["server", "--port", "8081"]; '
                         "baremetal never hands a string to a shell")
    return nonempty_string_list(value)


def url(value: Any) -> str:
    """An http(s) URL, without a trailing slash after the host."""
    text = nonempty_string(value)
    if not re.match(r"https?://[^/\s]+", text):
        raise FieldError(f"expected an http:// or https:// URL, got {text!r}")
    return text.rstrip("/") if text.count("/") == 3 else text


def slug(text: str) -> str:
    """A supervisord program name from a free-form name: lowercase, [a-z0-9._-] only."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return cleaned or "unnamed"


_SYSTEM_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")


def system_user(value: Any) -> str:
    """A user name as useradd takes it (the [stack] user the stack runs as)."""
    text = string(value)
    if not _SYSTEM_USER.match(text):
        raise FieldError(f"{text!r} is not a system user name (lower-case letters, digits, '_' and '-', starting "
                         "with a letter or '_', at most 32 characters)")
    return text
