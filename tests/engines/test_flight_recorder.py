"""The NCCL flight recorder: on for programs on more than one GPU (rendered), and its dumps collected the
way PyTorch's ranks make them: each rank reads its named pipe <prefix><rank>.pipe and, on a byte, writes
<prefix><rank>. No GPU here, so the ranks are small real processes doing exactly that."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from baremetal.config import parse_stack
from baremetal.engines import flight_recorder
from baremetal.plan.plan import plan
from tests.plan.test_render import facts

STACK = '''
[stack]
name = "fr"
root = "{root}"
[env.default]
kind = "system"
python = "/usr/bin/python3"
[[model]]
name = "big"
path = "/models/big"
gpus = [0, 1]
distributed_backend = "mp"
[[model]]
name = "small"
path = "/models/small"
gpus = [2]
[[model]]
name = "mine"
path = "/models/mine"
gpus = [3, 4]
environment = {{ TORCH_NCCL_TRACE_BUFFER_SIZE = "50" }}
[[program]]
name = "trainer"
command = ["/usr/bin/trainer"]
gpus = [5, 6]
'''

# A rank as PyTorch's ProcessGroupNCCL makes one: mkfifo, open it O_RDONLY|O_NONBLOCK, poll it; on a byte,
# write the ring buffer to <prefix><rank>.
RANK = '''
import os, sys, time
prefix, rank = sys.argv[1], sys.argv[2]
pipe = f"{prefix}{rank}.pipe"
os.mkfifo(pipe)
fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
print("ready", flush=True)
while True:
    try:
        data = os.read(fd, 128)
    except BlockingIOError:
        data = b""
    if data:
        with open(f"{prefix}{rank}", "wb") as out:
            out.write(b"entries of rank " + rank.encode())
    time.sleep(0.2)
'''


def test_programs_on_several_gpus_start_with_the_recorder_on(tmp_path):
    stack = parse_stack(STACK.format(root=tmp_path), tmp_path / "baremetal.toml")
    specs = {spec.name: spec for spec in plan(stack, facts())}
    prefix = str(tmp_path / "tmp" / "nccl-trace-vllm-big.rank")
    big = specs["vllm-big"].environment
    assert {key: big[key] for key in flight_recorder.environment(prefix)} == flight_recorder.environment(prefix)
    assert big["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1" and big["TORCH_NCCL_DEBUG_INFO_PIPE_FILE"] == prefix
    assert big["TORCH_NCCL_TRACE_BUFFER_SIZE"] == big["TORCH_FR_BUFFER_SIZE"] == "2000"
    assert "TORCH_NCCL_TRACE_BUFFER_SIZE" not in specs["vllm-small"].environment     # one GPU: no collectives
    assert specs["vllm-mine"].environment["TORCH_NCCL_TRACE_BUFFER_SIZE"] == "50"     # the user's value wins
    assert specs["trainer"].environment["TORCH_NCCL_DEBUG_INFO_TEMP_FILE"].endswith("nccl-trace-trainer.rank")


def test_collect_asks_each_live_rank_and_copies_every_dump(tmp_path):
    prefix = str(tmp_path / "nccl-trace-p.rank")
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, prefix, str(rank)], stdout=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    try:
        for rank in ranks:
            assert rank.stdout.readline().strip() == "ready"
        # a rank that is gone left its pipe (nobody reads it) and an old dump behind
        os.mkfifo(f"{prefix}2.pipe")
        Path(f"{prefix}2").write_bytes(b"from an earlier timeout")
        time.sleep(0.05)
        target = tmp_path / "evidence" / "nccl"
        copied = flight_recorder.collect(prefix, target, wait_s=5.0)
        assert sorted(p.name for p in target.iterdir()) == ["rank0", "rank1", "rank2"]
        assert (target / "rank1").read_bytes() == b"entries of rank 1"
        assert any(line.startswith("rank0 (fresh") for line in copied)
        assert any(line.startswith("rank2 (older") for line in copied)
    finally:
        for rank in ranks:
            rank.kill()
            rank.wait()


def test_nothing_to_collect_without_ranks(tmp_path):
    started = time.monotonic()
    assert flight_recorder.collect(str(tmp_path / "none.rank"), tmp_path / "out", wait_s=5.0) == []
    assert time.monotonic() - started < 1.0 and not (tmp_path / "out").exists()
