"""Dating log lines for `logs --since`: the timestamps programs write, lines without one, rotated files,
logs without any timestamp, and merging several logs oldest first."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from baremetal.supervisord.line_times import (UNDATED_AFTER_LINES, DatedLine, line_time_s, lines_since, merged,
                                              tail_dated)

UTC = timezone.utc
NOW_S = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def at(text: str, zone=UTC) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


@pytest.mark.parametrize("line, expected", [
    (b"2026-12-01 10:42:34,872 INFO spawned: 'api' with pid 7", at("2026-12-01 10:42:34.872")),        # supervisord
    (b"2026-12-01 10:42:35,493 INFO uvicorn.error: Uvicorn running", at("2026-12-01 10:42:35.493")),   # logging
    (b"2026-12-01T10:42:34.872+00:00 ready", at("2026-12-01 10:42:34.872")),                           # ISO 8601
    (b"2026-12-01T11:42:34+01:00 ready", at("2026-12-01 10:42:34")),                                   # offset
    (b"2026-12-01T10:42:34Z ready", at("2026-12-01 10:42:34")),
    (b"2026-12-01 10:42:34 | INFO | model_worker | Loading the model", at("2026-12-01 10:42:34")),     # FastChat
    (b"INFO 12-01 10:42:34 [api_server.py:1024] Starting vLLM API server", at("2026-12-01 10:42:34")),  # vLLM
    (b"(APIServer pid=2573) INFO 12-01 10:42:34 [loggers.py:123] Engine 000", at("2026-12-01 10:42:34")),
    (b"\x1b[32mINFO\x1b[0m 12-01 10:42:34 [api_server.py:1] coloured", at("2026-12-01 10:42:34")),
    (b"INFO:     127.0.0.1:51234 - \"POST /v1/completions HTTP/1.1\" 200 OK", None),                    # uvicorn access
    (b"Traceback (most recent call last):", None),
    (b"", None),
    (b"2026-13-45 99:99:99 not a date", None),
])
def test_line_time(line, expected):
    found = line_time_s(line, UTC, NOW_S)
    assert found == (pytest.approx(expected) if expected is not None else None)


def test_a_vllm_date_without_a_year_is_never_in_the_future():
    new_year_s = datetime(2027, 1, 1, 0, 5, tzinfo=UTC).timestamp()
    assert line_time_s(b"INFO 12-31 23:59:00 [x.py:1] last year", UTC, new_year_s) == at("2026-12-31 23:59:00")


def test_times_without_a_zone_are_the_programs_zone():
    shanghai = ZoneInfo("Asia/Shanghai")
    assert line_time_s(b"2026-12-01 18:00:00,000 INFO x", shanghai, NOW_S) == at("2026-12-01 10:00:00")


def write(path, lines, modified_s=NOW_S):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    os.utime(path, (modified_s, modified_s))


def test_lines_since_keeps_undated_lines_with_the_line_before_them(tmp_path):
    log = tmp_path / "vllm.err.log"
    write(log, [b"2026-12-01 11:40:00,000 INFO old", b"old traceback line",
                b"2026-12-01 11:55:00,000 ERROR new", b"Traceback (most recent call last):", b"  boom",
                b"2026-12-01 11:59:00,000 INFO newest"])
    found, dated = lines_since(log, at("2026-12-01 11:50:00"), UTC, NOW_S, undated_count=10)
    assert dated
    assert [line.text for line in found] == [b"2026-12-01 11:55:00,000 ERROR new", b"Traceback (most recent call last):",
                                             b"  boom", b"2026-12-01 11:59:00,000 INFO newest"]
    assert found[1].time_s == found[0].time_s == at("2026-12-01 11:55:00")


def test_lines_since_reads_the_rotated_files_it_needs(tmp_path):
    log = tmp_path / "api.log"
    write(log.with_name("api.log.2"), [b"2026-12-01 11:00:00,000 INFO too old"], NOW_S - 3600)
    write(log.with_name("api.log.1"), [b"2026-12-01 11:45:00,000 INFO before", b"2026-12-01 11:52:00,000 INFO rotated"],
          NOW_S - 480)
    write(log, [b"2026-12-01 11:58:00,000 INFO current"])
    found, _dated = lines_since(log, at("2026-12-01 11:50:00"), UTC, NOW_S, undated_count=10)
    assert [line.text for line in found] == [b"2026-12-01 11:52:00,000 INFO rotated", b"2026-12-01 11:58:00,000 INFO current"]


def test_a_log_without_timestamps_gives_its_last_lines_if_written_to_since(tmp_path):
    log = tmp_path / "web.log"
    write(log, [f"plain {index}".encode() for index in range(20)], modified_s=NOW_S - 30)
    found, dated = lines_since(log, NOW_S - 60, UTC, NOW_S, undated_count=3)
    assert not dated and [line.text for line in found] == [b"plain 17", b"plain 18", b"plain 19"]
    assert {line.time_s for line in found} == {NOW_S - 30}
    assert lines_since(log, NOW_S - 10, UTC, NOW_S, undated_count=3) == ([], False)     # not written since


def test_a_long_undated_end_stops_the_scan(tmp_path):
    log = tmp_path / "big.log"
    write(log, [b"2026-12-01 11:59:00,000 INFO dated, far back"] + [b"x"] * (UNDATED_AFTER_LINES + 5))
    found, dated = lines_since(log, NOW_S - 3600, UTC, NOW_S, undated_count=2)
    assert not dated and [line.text for line in found] == [b"x", b"x"]


def test_tail_dated_dates_the_first_lines_by_the_line_before_the_window(tmp_path):
    log = tmp_path / "w.log"
    write(log, [b"2026-12-01 11:00:00,000 INFO a", b"continued 1", b"continued 2", b"2026-12-01 11:30:00,000 INFO b"])
    lines = tail_dated(log, 3, UTC, NOW_S)
    assert [(line.text, line.time_s) for line in lines] == [
        (b"continued 1", at("2026-12-01 11:00:00")), (b"continued 2", at("2026-12-01 11:00:00")),
        (b"2026-12-01 11:30:00,000 INFO b", at("2026-12-01 11:30:00"))]
    assert tail_dated(tmp_path / "missing.log", 3, UTC, NOW_S) == []
    assert tail_dated(log, 0, UTC, NOW_S) == []


def test_merged_is_oldest_first_and_stable():
    first = [DatedLine(1.0, b"a1"), DatedLine(3.0, b"a3")]
    second = [DatedLine(1.0, b"b1"), DatedLine(2.0, b"b2")]
    assert [(index, line.text) for index, line in merged(first, second)] == [(0, b"a1"), (1, b"b1"), (1, b"b2"),
                                                                             (0, b"a3")]
