"""events --show, uncordon and the cordon marks of gpus/status, through the CLI as an operator runs them."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from baremetal.cli import cli
from baremetal.config import load_stack
from baremetal.host.cordon import cordon, cordon_path, read_cordons
from baremetal.watchdog.events import Event, EventLog, events_path
from tests.support.fake_nvml import FakeGpu, FakeNvml

STACK = '[stack]\nname = "hangs"\nroot = "state"\n[api]\nkind = "none"\n'


def run(*args: str, obj: dict | None = None):
    return CliRunner().invoke(cli, list(args), obj=obj)


def evidence_folder(root, name: str, program: str, stacks: str):
    folder = root / "evidence" / name
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"program": program, "reason": "frozen"}))
    (folder / "stacks.txt").write_text(stacks)
    (folder / "nccl").mkdir()
    (folder / "nccl" / "rank0").write_text("ring buffer")
    return folder


def test_show_the_newest_by_number_by_name_and_as_json(write_stack):
    path = write_stack(STACK)
    root = load_stack(path).root
    older = evidence_folder(root, "20261124-210000-web", "web", "Thread 1 (idle)\n    old_frame (x.py:1)\n")
    newer = evidence_folder(root, "20261124-210442-vllm-tiny", "vllm-tiny", "    run_busy_loop (core.py:1551)\n")
    os.utime(older, (1, 1))
    shown = run("-c", str(path), "events", "--show", "1")
    assert shown.exit_code == 0, shown.output
    assert f"Evidence folder {newer}" in shown.output and "----- stacks.txt -----" in shown.output
    assert "run_busy_loop" in shown.output and "----- nccl/rank0 -----" in shown.output
    assert shown.output.index("summary.json") < shown.output.index("stacks.txt")
    assert "old_frame" in run("-c", str(path), "events", "--show", "2").output
    assert "old_frame" in run("-c", str(path), "events", "-p", "web", "--show", "1").output
    assert "old_frame" in run("-c", str(path), "events", "--show", older.name).output
    document = json.loads(run("-c", str(path), "events", "--show", "1", "--json").output)
    assert document["summary.json"]["program"] == "vllm-tiny" and document["nccl/rank0"] == "ring buffer"


def test_show_errors_are_usage_errors(write_stack):
    path = write_stack(STACK)
    nothing = run("-c", str(path), "events", "--show", "1")
    assert nothing.exit_code == 2 and "no evidence folders yet" in nothing.output and "Traceback" not in nothing.output
    evidence_folder(load_stack(path).root, "20261124-210000-web", "web", "x")
    assert "there are 1 evidence folder(s)" in run("-c", str(path), "events", "--show", "3").output
    missing = run("-c", str(path), "events", "--show", "../../etc")
    assert missing.exit_code == 2 and "no such evidence folder" in missing.output


def test_event_lines_name_their_evidence(write_stack):
    path = write_stack(STACK)
    root = load_stack(path).root
    EventLog(events_path(root)).write(Event(1_790_000_000.0, "restart", "stopped by a signal: ...", "web",
                                            {"evidence": str(root / "evidence" / "20261124-210442-web")}))
    assert "[evidence: 20261124-210442-web]" in run("-c", str(path), "events").output


def test_uncordon(write_stack):
    path = write_stack(STACK)
    stack = load_stack(path)
    not_cordoned = run("-c", str(path), "uncordon", "1")
    assert not_cordoned.exit_code == 2 and "GPU 1 is not cordoned" in not_cordoned.output
    cordon(cordon_path(stack.run_dir), 1, "GPU 1 reported Xid 79 (GPU has fallen off the bus)")
    cordon(cordon_path(stack.run_dir), 2, "GPU 2 row remapping failed")
    done = run("-c", str(path), "uncordon", "1")      # supervisord not running: nothing to apply now
    assert done.exit_code == 0, done.output
    assert "GPU 1 uncordoned (cordoned by watchdog: GPU 1 reported Xid 79" in done.output
    assert "from the next `baremetal up`" in done.output
    assert list(read_cordons(cordon_path(stack.run_dir))) == [2]


def test_gpus_marks_the_stacks_cordoned_gpus(write_stack):
    path = write_stack(STACK)
    cordon(cordon_path(load_stack(path).run_dir), 1, "GPU 1 uncorrectable ECC errors rose from 0 to 2")
    nvml = {"pynvml": FakeNvml([FakeGpu(), FakeGpu(uuid="GPU-1")])}
    text = run("-c", str(path), "gpus", obj=dict(nvml)).output
    assert "1 (cordoned)" in text and "0 (cordoned)" not in text
    assert "GPU 1 CORDONED since" in text and "`baremetal uncordon 1`" in text
    document = json.loads(run("-c", str(path), "gpus", "--json", obj=dict(nvml)).output)
    assert document["gpus"][0]["cordoned"] is None and document["gpus"][1]["cordoned"]["reason"].startswith("GPU 1")
