"""Prometheus's text exposition format (0.0.4): writing our pages with exact numbers, and reading the sums
of named samples from an engine's page.

Numbers are written exactly: an integer as an integer (a counter at 1,234,567 stays `1234567`, 80 GiB
stays `85899345920`), a float by its shortest round-trip form (`repr`), infinities and NaN as Prometheus
spells them. `f"{value:g}"` would keep six significant digits and lose both.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def number(value: float | int | bool) -> str:
    """A sample value, exactly."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2 ** 63:
        return str(int(value))
    return repr(value)


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(pairs: Mapping[str, object] | Sequence[tuple[str, object]] = (), /, **named: object) -> str:
    """`{a="1",b="x"}` from pairs or keywords (empty for none), values escaped as the format requires."""
    items = list(pairs.items() if isinstance(pairs, Mapping) else pairs) + list(named.items())
    text = ",".join(f'{name}="{_escape(value)}"' for name, value in items)
    return "{" + text + "}" if text else ""


def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float | int]]) -> list[str]:
    """A metric family: HELP, TYPE, then one line per (label text, value)."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{label_text} {number(value)}" for label_text, value in samples]
    return lines


def histogram(name: str, label_pairs: Sequence[tuple[str, object]], bounds: Sequence[float],
              counts: Sequence[int], total: float, count: int) -> list[str]:
    """The _bucket (cumulative, ending with +Inf), _sum and _count lines of one histogram series."""
    lines, cumulative = [], 0
    for bound, bucket_count in zip(tuple(bounds) + (math.inf,), counts):
        cumulative += bucket_count
        le = "+Inf" if math.isinf(bound) else repr(float(bound))
        lines.append(f"{name}_bucket{labels(tuple(label_pairs) + (('le', le),))} {cumulative}")
    lines.append(f"{name}_sum{labels(label_pairs)} {number(total)}")
    lines.append(f"{name}_count{labels(label_pairs)} {count}")
    return lines


def page(lines: Iterable[str]) -> str:
    """The page: the lines, newline-terminated."""
    return "\n".join(lines) + "\n"


def sums(text: str, names: Iterable[str]) -> dict[str, float]:
    """Sum of each named sample over its label sets, read from a page in the text format."""
    wanted = set(names)
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        end = line.find("{")
        if end < 0:
            end = line.find(" ")
        name = line[:end]
        if name not in wanted:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        totals[name] = totals.get(name, 0.0) + value
    return totals
