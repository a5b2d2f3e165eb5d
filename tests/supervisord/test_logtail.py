"""Reading log files as tail does: the last lines, and following through supervisord-style rotation."""

from __future__ import annotations

import os
import threading
import time

import pytest

from baremetal.supervisord.logtail import BLOCK_BYTES, follow, last_lines, reverse_lines


@pytest.mark.parametrize("content, count, expected", [
    (b"a\nb\nc\n", 2, [b"b", b"c"]),
    (b"a\nb\nc", 2, [b"b", b"c"]),            # no newline at the end
    (b"a\nb\n", 10, [b"a", b"b"]),            # fewer lines than asked
    (b"", 5, []),
    (b"a\n\nb\n", 3, [b"a", b"", b"b"]),     # blank lines are lines
    (b"a\nb\n", 0, []),
])
def test_last_lines(short_tmp, content, count, expected):
    path = short_tmp / "x.log"
    path.write_bytes(content)
    assert last_lines(path, count) == expected


def test_last_lines_across_blocks_and_missing_file(short_tmp):
    path = short_tmp / "big.log"
    lines = [f"line {index:06d} ".encode() + b"x" * 100 for index in range(3 * BLOCK_BYTES // 100)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert last_lines(path, 700) == lines[-700:]
    assert list(reverse_lines(path))[1:4] == lines[-1:-4:-1]
    assert last_lines(short_tmp / "none.log", 5) == []


def test_follow_goes_on_through_rotation_and_truncation(short_tmp):
    path = short_tmp / "web.log"
    path.write_bytes(b"old line\n")
    received: list[bytes] = []
    stop = threading.Event()
    thread = threading.Thread(target=follow, args=(path, received.append, stop), kwargs={"interval_s": 0.02})
    thread.start()

    def seen(text: bytes) -> None:
        deadline = time.monotonic() + 5
        while text not in b"".join(received):
            assert time.monotonic() < deadline, f"{text!r} not followed; got {b''.join(received)!r}"
            time.sleep(0.01)

    try:
        time.sleep(0.1)
        with open(path, "ab") as stream:
            stream.write(b"one\n")
            stream.flush()
            seen(b"one\n")
            stream.write(b"written just before rotation\n")
        os.rename(path, path.with_name("web.log.1"))     # supervisord: rename, then open a new file
        time.sleep(0.1)
        path.write_bytes(b"after rotation\n")
        seen(b"after rotation\n")
        path.write_bytes(b"tr\n")                         # truncated and rewritten (copytruncate)
        seen(b"tr\n")
    finally:
        stop.set()
        thread.join(5)
    text = b"".join(received)
    assert b"old line" not in text                        # following starts at the end
    assert text.index(b"one") < text.index(b"written just before rotation") < text.index(b"after rotation")
