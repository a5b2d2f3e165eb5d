"""Where `top` reads: files read again only when they change, the newest events across a rotation, NVML
through the recording fake (else the watchdog's readings), who holds GPU memory, the gateway's /metrics
over real HTTP with the stack's key, a log tail, and a supervisord that is not running."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

import pytest

from baremetal.cli.top.sources import ChangedFile, GpuOwners, GpuSource, NodeReader, newest_events
from baremetal.config import load_stack
from baremetal.supervisord.client import ProcessInfo
from baremetal.supervisord.states import ProcessState
from tests.support.fake_nvml import FakeGpu, FakeNvml, NVML_ERROR_LIBRARY_NOT_FOUND
from tests.support.ports import free_port


def test_a_changed_file_is_parsed_only_when_it_changes(tmp_path):
    path = tmp_path / "state.json"
    parses = []

    def parse(found):
        parses.append(found)
        return json.loads(found.read_text())

    watched = ChangedFile(path, parse)
    assert watched.read() is None and parses == []          # missing
    path.write_text('{"a": 1}')
    assert watched.read() == {"a": 1} and watched.read() == {"a": 1} and len(parses) == 1
    path.write_text('{"a": 22}')
    assert watched.read() == {"a": 22} and len(parses) == 2
    path.write_text("{half written")
    assert watched.read() is None
    path.unlink()
    assert watched.read() is None


def test_newest_events_reach_into_the_rotated_file(tmp_path):
    path = tmp_path / "events.jsonl"
    path.with_name("events.jsonl.1").write_text("".join(json.dumps({"n": n}) + "\n" for n in range(5)))
    path.write_text(json.dumps({"n": 5}) + "\nnot json\n" + json.dumps({"n": 6}) + "\n")
    assert [event["n"] for event in newest_events(path, count=4)] == [3, 4, 5, 6]
    assert newest_events(tmp_path / "none.jsonl") == ()


def test_gpus_from_nvml_else_from_the_watchdog():
    nvml = FakeNvml([FakeGpu(utilization_gpu=87, temperature_c=61)])
    gpus, source, why = GpuSource(nvml).read(None, False)
    assert source == "nvml" and why is None
    assert gpus[0]["utilization_gpu_percent"] == 87 and gpus[0]["temperature_c"] == 61
    assert not [call for call in nvml.calls if call[0] == "nvmlDeviceRegisterEvents"]   # readings only
    without = GpuSource(FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND))
    report = {"nvml": None, "gpus": [{"index": 0, "utilization_gpu_percent": 12}]}
    assert without.read(report, True) == (({"index": 0, "utilization_gpu_percent": 12},), "watchdog", None)
    gpus, source, why = without.read(report, False)            # a stale report is not used
    assert gpus == () and source is None and "no NVIDIA driver" in why


def test_gpu_owners_walk_the_program_trees():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import os

        me = ProcessInfo("server", "server", ProcessState.RUNNING, os.getpid(), 0, 0, 0, 0, "", "", "", "")
        gpus = ({"index": 0, "processes": [{"pid": child.pid, "memory_used_bytes": 1}]},)
        owners = GpuOwners()
        assert owners.owners(gpus, (me,)) == {child.pid: "server"}
        assert owners.owners((), (me,)) == {}
    finally:
        child.kill()
        child.wait()


class MetricsHandler(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.seen.append(self.headers.get("Authorization", ""))
        body = b'baremetal_gateway_in_flight{model="chat",backend="a"} 2\n'
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def gateway():
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), MetricsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port
    server.shutdown()
    server.server_close()


def test_node_reader_without_supervisord(write_stack, short_tmp, gateway):
    config = write_stack(f'''
        [stack]
        name = "r"
        root = "state"
        [api]
        port = {gateway}
        api_keys = ["top-secret-key"]
        [[program]]
        name = "web"
        command = ["sleep", "1"]
    ''')
    stack = load_stack(config)
    logs = short_tmp / "state" / "logs"
    logs.mkdir(parents=True)
    (logs / "web.log").write_text("older stdout\n")
    (logs / "web.err.log").write_text("line 1\nline 2\n")
    reader = NodeReader(stack, nvml=FakeNvml([]))
    reader.selected = ("web", None)
    try:
        reading = reader.read()
    finally:
        reader.close()
    assert reading.processes is None and "not running" in reading.supervisord_error
    assert reading.metrics_text.startswith("baremetal_gateway_in_flight") and MetricsHandler.seen[-1] == \
        "Bearer top-secret-key"
    assert reading.log.program == "web" and reading.log.lines == ("line 1", "line 2")
    assert reading.log.stream in ("stderr", "stdout") and reading.events == () and reading.watchdog is None
    reader.selected = ("web", "stdout")
    assert reader.read().log.lines == ("older stdout",)


def test_metrics_that_do_not_answer(write_stack):
    stack = load_stack(write_stack(f'''
        [stack]
        name = "r"
        root = "state"
        [api]
        port = {free_port()}
    '''))
    reader = NodeReader(stack, nvml=FakeNvml([]))
    try:
        reading = reader.read()
    finally:
        reader.close()
    assert reading.metrics_text is None and "ConnectionRefusedError" in reading.metrics_error
