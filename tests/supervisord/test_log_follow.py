"""Following many programs' logs at once: whole lines tagged with program and stream, through rotation and
truncation, files that appear later, and unfinished lines handed out after a while."""

from __future__ import annotations

import os

from baremetal.supervisord.log_follow import LogFollower, LogSource, program_logs


class Clock:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def append(path, data: bytes) -> None:
    with open(path, "ab") as stream:
        stream.write(data)


def test_program_logs_names_supervisords_files(tmp_path):
    assert program_logs(tmp_path, ["api", "vllm"], ("stdout", "stderr")) == [
        LogSource("api", "stdout", tmp_path / "api.log"), LogSource("api", "stderr", tmp_path / "api.err.log"),
        LogSource("vllm", "stdout", tmp_path / "vllm.log"), LogSource("vllm", "stderr", tmp_path / "vllm.err.log")]


def test_lines_from_every_file_from_now_on(tmp_path):
    api, vllm = tmp_path / "api.log", tmp_path / "vllm.err.log"
    api.write_bytes(b"before the follower\n")
    sources = [LogSource("api", "stdout", api), LogSource("vllm", "stderr", vllm)]
    follower = LogFollower(sources)
    try:
        assert follower.poll() == []
        append(api, b"one\ntwo\n")
        vllm.write_bytes(b"created later\n")          # a file that did not exist: read from its start
        assert [(source.program, line) for source, line in follower.poll()] == [
            ("api", b"one"), ("api", b"two"), ("vllm", b"created later")]
        os.rename(api, tmp_path / "api.log.1")        # supervisord's rotation
        api.write_bytes(b"after rotation\n")
        append(vllm, b"x\n")
        assert [(s.stream, line) for s, line in follower.poll()] == [("stdout", b"after rotation"), ("stderr", b"x")]
        api.write_bytes(b"")                           # truncated (seen while shorter than what was read)
        assert follower.poll() == []
        append(api, b"after truncation\n")
        assert [line for _s, line in follower.poll()] == [b"after truncation"]
    finally:
        follower.close()


def test_an_unfinished_line_waits_then_comes_out(tmp_path):
    path = tmp_path / "bar.log"
    path.write_bytes(b"")
    clock = Clock()
    follower = LogFollower([LogSource("bar", "stdout", path)], partial_after_s=1.0, clock=clock)
    try:
        append(path, b"progress 10%")
        assert follower.poll() == []
        clock.now_s = 0.5
        append(path, b"\rprogress 20%")
        assert follower.poll() == []
        clock.now_s = 1.2
        assert [line for _s, line in follower.poll()] == [b"progress 10%\rprogress 20%"]
        append(path, b" done\n")
        assert [line for _s, line in follower.poll()] == [b" done"]
    finally:
        follower.close()


def test_lines_stops_when_told(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"")
    follower = LogFollower([LogSource("a", "stdout", path)])
    naps = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 1:
            append(path, b"woke\n")

    stops = iter([False, False, False, True])
    try:
        assert [line for _s, line in follower.lines(lambda: next(stops), interval_s=0.05, sleep=nap)] == [b"woke"]
        assert naps == [0.05, 0.05]
    finally:
        follower.close()
