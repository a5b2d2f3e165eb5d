"""The cells of `top`'s tables, as text: one function per table, shared by the text view and the Textual
view, so `top --once` prints what the screen shows. Pure formatting; '-' where a value is unknown."""

from __future__ import annotations

import time

from baremetal.cli.status_view import duration_text
from baremetal.cli.top.frame import EventRow, Frame, GpuRow, KeyRow, ModelRow, ProgramRow

BARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 30                # characters of history
SPARK_SECONDS_PER_CHAR = 10.0   # 30 characters: the last five minutes

PROGRAM_HEADERS = ["PROGRAM", "STATE", "READY", "WATCHDOG", "RESTARTS", "UPTIME", "PID", "PORT", "GPUS", "GPU MEM"]
MODEL_HEADERS = ["MODEL", "BACKENDS", "REQ/S", "IN FLIGHT", "HELD", "MIGRATED/m", "TTFT p50", "TOK/S", "ERRORS/m",
                 "TOK/S (5m)"]
KEY_HEADERS = ["KEY", "MODEL", "REQ/S", "TOK/S", "ERRORS/m", "LIMITED/m"]
GPU_HEADERS = ["GPU", "NAME", "UTIL", "UTIL (5m)", "MEMORY", "TEMP", "POWER", "THROTTLE", "ECC", "CORDONED",
               "HELD BY"]
EVENT_HEADERS = ["TIME", "PROGRAM", "KIND", "MESSAGE"]


def sparkline(values: tuple[float, ...], width: int = SPARK_WIDTH, per_char: int = 10,
              top: float | None = None) -> str:
    """The newest values as bars, one character per `per_char` values (their mean), newest on the right;
    scaled to `top` (e.g. 100 for percentages), else to the largest mean shown."""
    if not values:
        return ""
    means = []
    end = len(values)
    while end > 0 and len(means) < width:
        chunk = values[max(0, end - per_char):end]
        means.append(sum(chunk) / len(chunk))
        end -= per_char
    means.reverse()
    scale = top if top else max(means)
    if not scale or scale <= 0:
        return BARS[0] * len(means)
    return "".join(BARS[min(len(BARS) - 1, int(value / scale * (len(BARS) - 1) + 0.5))] for value in means)


def number(value: float | None, digits: int = 1) -> str:
    """A rate or count for a cell: '-' unknown, integers without decimals."""
    if value is None:
        return "-"
    if digits == 0 or float(value).is_integer() and abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def gib(value: int | None) -> str:
    """Bytes as GiB with one decimal: "24.3G"."""
    return "-" if value is None else f"{value / 2**30:.1f}G"


def seconds(value: float | None) -> str:
    """A latency: '35ms', '1.20s'."""
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def uptime_text(seconds_: float | None) -> str:
    """An uptime that changes at most once a minute after the first minute ("45s", "12m", "5h2m"):
    a cell that changes every second makes the whole table redraw every second."""
    if seconds_ is not None and 60 <= seconds_ < 3600:
        return f"{int(seconds_ // 60)}m"
    return duration_text(seconds_)


def program_cells(row: ProgramRow) -> list[str]:
    """A row of the programs table (PROGRAM_HEADERS)."""
    ready = "-" if row.ready is None else ("yes" if row.ready else "NO")
    restarts = "?" if row.restarts is None else str(row.restarts)
    if row.watchdog_restarts:
        restarts += f" (watchdog {row.watchdog_restarts})"
    verdict = row.verdict + (", draining" if row.draining else "")
    gpus = "-" if row.gpus is None else (",".join(map(str, row.gpus)) or "cpu")
    return [row.name, row.state, ready, verdict, restarts, uptime_text(row.uptime_s), str(row.pid or "-"),
            str(row.port or "-"), gpus, gib(row.gpu_memory_bytes) if row.gpu_memory_bytes is not None else "-"]


def per_char(interval_s: float) -> int:
    """Readings per sparkline character, so that a character stands for SPARK_SECONDS_PER_CHAR."""
    return max(1, round(SPARK_SECONDS_PER_CHAR / max(interval_s, 0.01)))


def model_cells(row: ModelRow, readings_per_char: int = 10) -> list[str]:
    """A row of the models table (MODEL_HEADERS)."""
    backends = str(row.backends) if row.ready_backends is None else f"{row.ready_backends}/{row.backends} ready"
    return [row.name, backends, number(row.requests_per_s), number(row.in_flight, 0), number(row.held, 0),
            number(row.migrated_per_min), seconds(row.ttft_p50_s), number(row.tokens_per_s),
            number(row.errors_per_min), sparkline(row.tokens_history, per_char=readings_per_char)]


def key_cells(row: KeyRow) -> list[str]:
    """A row of the key names table (KEY_HEADERS)."""
    return [row.key, row.model, number(row.requests_per_s), number(row.tokens_per_s), number(row.errors_per_min),
            number(row.rate_limited_per_min)]


def gpu_cells(row: GpuRow, readings_per_char: int = 10) -> list[str]:
    """A row of the GPUs table (GPU_HEADERS)."""
    def value(number_: float | None, unit: str) -> str:
        return "-" if number_ is None else f"{number_:.0f}{unit}"

    memory = f"{gib(row.memory_used_bytes)}/{gib(row.memory_total_bytes)}"
    power = f"{value(row.power_w, '')}/{value(row.power_limit_w, ' W')}"
    held = ", ".join(f"{who} {gib(size)}" for who, size in row.programs) or "-"
    return [str(row.index), row.name or "-", value(row.utilization_percent, "%"),
            sparkline(row.utilization_history, per_char=readings_per_char, top=100.0), memory, value(row.temperature_c, " C"), power,
            ",".join(row.throttle) or "-", "-" if row.ecc_uncorrected is None else str(row.ecc_uncorrected),
            row.cordoned or "-", held]


def event_cells(row: EventRow) -> list[str]:
    """A row of the events table (EVENT_HEADERS): local time, program, kind, message."""
    return [time.strftime("%H:%M:%S", time.localtime(row.time_s)), row.program or "-", row.kind,
            row.message]


def headline(frame: Frame) -> str:
    """The first line: the stack, supervisord, how many programs serve, the age of the watchdog's report."""
    parts = [f"stack {frame.stack!r}"]
    if frame.supervisord_error:
        parts.append(f"supervisord: {frame.supervisord_error}")
    else:
        parts.append(f"{frame.ready_count}/{len(frame.programs)} running and ready")
    if frame.watchdog_age_s is None:
        parts.append("no watchdog report")
    elif frame.watchdog_fresh:
        parts.append(f"watchdog {duration_text(frame.watchdog_age_s)} ago")
    else:
        parts.append(f"watchdog report stale ({duration_text(frame.watchdog_age_s)} old): is it running?")
    if frame.tokens_history:
        parts.append(f"tokens/s (5m) {sparkline(frame.tokens_history, per_char=per_char(frame.interval_s))}")
    parts.append(time.strftime("%H:%M:%S", time.localtime(frame.time_s)))
    return " · ".join(parts)


def no_gpu_line(frame: Frame) -> str:
    """The GPU panel when there are no readings."""
    return f"no GPU: {frame.no_gpu_reason or 'no readings'}"
