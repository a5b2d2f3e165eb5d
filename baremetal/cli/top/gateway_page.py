"""The gateway's /metrics page as `top` needs it: one reading of the counters per model and per key name,
and rates between two readings. Pure: text in, numbers out.

Metric names are the gateway's (see CONTRACTS.md): requests, first-byte histogram and in-flight gauge per
model and backend; held, retried and migrated requests per model; requests, tokens and rate-limited
requests per key name. A family the gateway does not publish reads as None ("-" on screen), so `top`
works with gateways of every age.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterator, Mapping

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
PREFIX = "baremetal_gateway_"


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for each sample line of a text-format page; comments and damaged lines skipped."""
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        found = SAMPLE.match(line)
        if not found:
            continue
        try:
            value = float(found.group(4))
        except ValueError:
            continue
        labels = {name: value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for name, value in LABEL.findall(found.group(3) or "")}
        yield found.group(1), labels, value


@dataclass(frozen=True)
class KeyCounts:
    """One key name's counters for one model (cumulative)."""

    requests: float = 0.0
    errors: float = 0.0
    tokens: float = 0.0
    rate_limited: float = 0.0


@dataclass(frozen=True)
class ModelCounts:
    """One model's counters (cumulative, summed over its backends and endpoints) and gauges."""

    requests: float = 0.0
    errors: float = 0.0                        # answered with a 5xx status
    in_flight: float = 0.0
    first_byte_buckets: tuple[tuple[float, float], ...] = ()   # (upper bound s, cumulative count)
    tokens: float | None = None                # completion tokens; None: the gateway does not count them
    held: float | None = None
    retried: float | None = None
    migrated: float | None = None


@dataclass(frozen=True)
class GatewayCounts:
    """One reading of the page."""

    time_s: float
    models: Mapping[str, ModelCounts] = field(default_factory=dict)
    keys: Mapping[tuple[str, str], KeyCounts] = field(default_factory=dict)     # (key name, model)


def read_counts(text: str, time_s: float) -> GatewayCounts:
    """The counters of a page read at `time_s`. Requests refused before a model was known (model="")
    are left out."""
    models: dict[str, dict] = {}
    buckets: dict[str, dict[float, float]] = {}
    keys: dict[tuple[str, str], dict] = {}

    def add(target: dict, name: str, value: float) -> None:
        target[name] = (target.get(name) or 0.0) + value

    for name, labels, value in samples(text):
        short = name[len(PREFIX):]
        model = labels.get("model", "")
        if short.startswith("key_") or short in ("tokens_total", "rate_limited_total"):
            _key_sample(keys, models, short, labels, value, add)
            continue
        if not model:
            continue
        entry = models.setdefault(model, {})
        if short == "requests_total":
            add(entry, "requests", value)
            if labels.get("status", "").startswith("5"):
                add(entry, "errors", value)
        elif short == "in_flight":
            add(entry, "in_flight", value)
        elif short == "time_to_first_byte_seconds_bucket":
            bound = math.inf if labels.get("le") == "+Inf" else float(labels.get("le", "nan"))
            per_model = buckets.setdefault(model, {})
            per_model[bound] = per_model.get(bound, 0.0) + value
        elif short in ("held", "retried_total", "migrated_total"):
            add(entry, short.removesuffix("_total"), value)
    for model, per_model in buckets.items():
        models.setdefault(model, {})["first_byte_buckets"] = tuple(sorted(per_model.items()))
    return GatewayCounts(time_s, {model: ModelCounts(**values) for model, values in models.items() if model},
                         {key: KeyCounts(**values) for key, values in keys.items()})


def _key_sample(keys: dict, models: dict, short: str, labels: dict[str, str], value: float, add) -> None:
    model = labels.get("model", "")
    if short == "tokens_total":
        if labels.get("kind") == "completion" and model:
            add(models.setdefault(model, {}), "tokens", value)
            add(keys.setdefault((labels.get("key", "-"), model), {}), "tokens", value)
        return
    if short == "key_requests_total":
        entry = keys.setdefault((labels.get("key", "-"), model), {})
        add(entry, "requests", value)
        if labels.get("status", "").startswith("5"):
            add(entry, "errors", value)
    elif short == "rate_limited_total":
        add(keys.setdefault((labels.get("key", "-"), model), {}), "rate_limited", value)


def increase(new: float | None, old: float | None) -> float | None:
    """How much a counter grew between two readings; a counter that went down was reset (the gateway
    restarted) and grew by its new value."""
    if new is None:
        return None
    if old is None or new < old:
        return new
    return new - old


def quantile(fraction: float, new: tuple[tuple[float, float], ...],
             old: tuple[tuple[float, float], ...] = ()) -> float | None:
    """The `fraction` quantile (0.5 = median) of what a cumulative histogram observed between two readings,
    interpolated within its bucket as Prometheus's histogram_quantile does; None when nothing was observed."""
    before = dict(old)
    counts = [(bound, increase(count, before.get(bound)) or 0.0) for bound, count in new]
    if any(count < before.get(bound, 0.0) for bound, count in new):
        counts = list(new)                     # reset in between: everything since the reset
    if not counts or counts[-1][1] <= 0:
        return None
    rank = fraction * counts[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in counts:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
