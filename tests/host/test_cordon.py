"""cordon.json: written under a lock, read tolerantly, first reason kept, uncordon removes."""

from __future__ import annotations

import json
import threading

from baremetal.host.cordon import cordon, cordon_path, cordoned_gpus, note_reset, read_cordons, uncordon


def test_cordon_uncordon_round_trip(tmp_path):
    path = cordon_path(tmp_path)
    assert read_cordons(path) == {} and cordoned_gpus(path) == frozenset()
    assert cordon(path, 1, "Xid 79 (GPU has fallen off the bus)", uuid="GPU-1", clock=lambda: 100.0)
    assert not cordon(path, 1, "later reason", clock=lambda: 200.0)      # already cordoned: first reason kept
    entry = read_cordons(path)[1]
    assert entry.reason.startswith("Xid 79") and entry.since_s == 100.0 and entry.uuid == "GPU-1"
    document = json.loads(path.read_text())
    assert document["gpus"]["1"]["by"] == "watchdog" and document["updated_s"] == 100.0
    note_reset(path, 1, "nvidia-smi -r: ok")
    assert read_cordons(path)[1].reset == "nvidia-smi -r: ok"
    removed = uncordon(path, [1, 5])
    assert [e.gpu for e in removed] == [1] and cordoned_gpus(path) == frozenset()


def test_damaged_or_half_known_file_reads_safely(tmp_path):
    path = cordon_path(tmp_path)
    path.write_text("{not json")
    assert read_cordons(path) == {}
    path.write_text(json.dumps({"gpus": {"x": {}, "2": {"reason": "r", "future_key": 1}, "3": "bad"}}))
    assert list(read_cordons(path)) == [2]


def test_concurrent_writers_lose_nothing(tmp_path):
    path = cordon_path(tmp_path)
    threads = [threading.Thread(target=cordon, args=(path, gpu, f"reason {gpu}")) for gpu in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cordoned_gpus(path) == frozenset(range(8))
