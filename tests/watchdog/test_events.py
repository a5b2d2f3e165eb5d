"""The event log: JSON lines, bounded by rotation, read back across rotations, followed like tail -F."""

from __future__ import annotations

import threading

from baremetal.watchdog.events import Event, EventLog, follow, format_event, read_events


def test_events_are_json_lines_read_back_oldest_first(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    log.write(Event(1000.0, "ready", "ready after 3.1s", "web"))
    log.write(Event(1001.0, "restart", "3 probes failed", "web", {"log_tail": {"stdout": ["boom"]}}))
    events = read_events(tmp_path / "events.jsonl")
    assert [(e["kind"], e["program"]) for e in events] == [("ready", "web"), ("restart", "web")]
    assert events[1]["log_tail"] == {"stdout": ["boom"]} and events[0]["time"].startswith("19")
    assert "web" in format_event(events[1]) and "3 probes failed" in format_event(events[1])


def test_the_log_is_bounded_and_keeps_the_newest(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=2000, backups=2)
    for number in range(200):
        log.write(Event(1000.0 + number, "gpu", f"event {number}"))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 3 * 2000
    events = read_events(path, backups=2)
    assert events[-1]["message"] == "event 199"
    numbers = [int(e["message"].split()[1]) for e in events]
    assert numbers == sorted(numbers) and numbers == list(range(numbers[0], 200))
    assert [e["message"] for e in read_events(path, limit=2, backups=2)] == ["event 198", "event 199"]


def test_a_half_written_line_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    EventLog(path).write(Event(1.0, "ready", "ok"))
    with open(path, "a") as stream:
        stream.write('{"kind": "rest')
    assert [e["kind"] for e in read_events(path)] == ["ready"]


def test_follow_sees_new_events_across_a_rotation(tmp_path):
    path = tmp_path / "events.jsonl"
    # One rotation during the test (about 1,250 bytes written): a follower, like tail -F, cannot see a
    # file that was rotated away twice between two of its reads with one backup kept.
    log = EventLog(path, max_bytes=900, backups=1)
    log.write(Event(1.0, "old", "written before following"))
    seen, done = [], threading.Event()

    def reader():
        for event in follow(path, stop=done.is_set, poll_s=0.02):
            seen.append(event["message"])
            if len(seen) == 8:
                done.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = threading.Event()
    deadline.wait(0.2)                   # let it open the file and seek to its end
    for number in range(8):
        log.write(Event(2.0 + number, "new", f"message number {number} with some padding to rotate"))
        deadline.wait(0.03)
    thread.join(10)
    done.set()
    assert seen == [f"message number {n} with some padding to rotate" for n in range(8)]
    assert (tmp_path / "events.jsonl.1").exists()
