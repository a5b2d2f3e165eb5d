"""Signs of loading progress: the pure rule as a table, and the readings of a real process that reads a
file without printing anything (its /proc io counters), one that prints, and one that sleeps."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from baremetal.host.nvml import GpuProcess, GpuSample
from baremetal.watchdog.load_progress import LoadReading, LoadWatch, moved

MiB = 1 << 20


@pytest.mark.parametrize("before,after,cpu_s,elapsed_s,signs", [
    (None, LoadReading(10, 0, 0), 0.0, 0.0, ()),                              # the first look: nothing to compare
    (LoadReading(10, 0, 0), LoadReading(10, 0, 0), 0.0, 1.0, ()),            # asleep
    (LoadReading(10, 0, 0), LoadReading(90, 0, 0), 0.0, 1.0, ("log +80 bytes",)),
    (LoadReading(0, 0, 0), LoadReading(0, 4 * MiB, 0), 0.0, 1.0, ()),        # allocator noise
    (LoadReading(0, 0, 0), LoadReading(0, 512 * MiB, 0), 0.0, 1.0, ("GPU memory +512 MiB",)),
    (LoadReading(0, 0, 0), LoadReading(0, 0, 100_000), 0.0, 1.0, ()),        # reading a config file
    (LoadReading(0, 0, 0), LoadReading(0, 0, 300 * MiB), 0.0, 1.0, ("read +300 MiB",)),
    (LoadReading(0, 0, 0), LoadReading(0, 0, 0), 0.01, 1.0, ()),             # an idle interpreter's threads
    (LoadReading(0, 0, 0), LoadReading(0, 0, 0), 0.9, 1.0, ("CPU 90% of a core",)),
])
def test_moved(before, after, cpu_s, elapsed_s, signs):
    assert moved(before, after, cpu_s, elapsed_s) == signs


def follow(argv, tmp_path, looks=3):
    log = tmp_path / "p.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            watch = LoadWatch([log])
            time.sleep(1.0)                         # past the interpreter's own start-up reads
            watch.look([process.pid], [], 0.0, time.monotonic())
            seen = []
            for _ in range(looks):
                time.sleep(0.5)
                seen += watch.look([process.pid], [], 0.0, time.monotonic())
            return seen
        finally:
            process.kill()
            process.wait()


def test_a_real_reader_shows_its_reads(tmp_path):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\0" * (8 * MiB))
    reader = f"import time\nwhile True:\n    open({str(weights)!r}, 'rb').read()\n    time.sleep(0.1)"
    signs = follow([sys.executable, "-c", reader], tmp_path)
    assert any(sign.startswith("read +") for sign in signs), signs
    assert not any(sign.startswith("log") for sign in signs)


def test_a_real_printer_shows_its_log(tmp_path):
    printer = "import time\nwhile True:\n    print('loading shard', flush=True)\n    time.sleep(0.1)"
    assert any(sign.startswith("log +") for sign in follow([sys.executable, "-c", printer], tmp_path))


def test_a_real_sleeper_shows_nothing(tmp_path):
    assert follow([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path) == []


def test_gpu_memory_of_its_processes_only(tmp_path):
    watch = LoadWatch([])
    mine, other = 101, 202
    first = [GpuSample(index=0, time_s=0, processes=(GpuProcess(mine, 1 << 30), GpuProcess(other, 1 << 30)))]
    later = [GpuSample(index=0, time_s=1, processes=(GpuProcess(mine, 3 << 30), GpuProcess(other, 9 << 30)))]
    watch.look([mine], first, 0.0, 0.0)
    assert watch.look([mine], later, 0.0, 1.0) == ("GPU memory +2048 MiB",)
