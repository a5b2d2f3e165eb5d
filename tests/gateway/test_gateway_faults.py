"""Faults that cost the clients nothing, with real HTTP upstreams (tests.gateway.upstream as [[program]]
backends) under real supervisord, asked with the openai SDK and httpx: held requests (SSE comments, then
the answer; the 503 past api.hold_timeout), drained replicas, retries before the first byte (a 5xx, a
backend found stuck), streams that break or go silent and continue on the other replica, and
api.migration_limit. The real engines get the same faults in tests/e2e/test_faults_vllm.py."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests.support.upstreams import dead_program, gateway_counter, upstream_program, upstream_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real supervisord and real servers

FULL = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def running():
    def text(root, ports):
        programs = "".join(upstream_program(name, ports[name], "chat") for name in ("a", "b"))
        return f'''
[stack]
name = "gwfaults"
root = "state"
[api]
port = {ports["gateway"]}
hold_timeout = "3s"
[watchdog]
enabled = false
stall_after = "1s"          # the gateway's own stall limit: busy_stall_after + stall_after = 2 s
busy_stall_after = "1s"
{programs}{dead_program(ports["dead"], "lonely")}'''

    with upstream_stack(("a", "b"), text) as stack:
        yield stack


@pytest.fixture
def client(running):
    return openai.OpenAI(base_url=running.gateway_url + "/v1", api_key="none", max_retries=0, timeout=30)


def counter(running, name: str) -> int:
    return gateway_counter(running.gateway_url, name, "chat")


def gateway_log(running) -> str:
    return "".join(path.read_text(errors="replace") for path in running.stack.logs_dir.glob("api*"))


def judge(running, programs: dict) -> None:
    """Write the watchdog's verdicts and wait until the gateway has read them."""
    running.stack.watchdog_state_path.write_text(json.dumps({"updated_s": time.time(), "programs": programs}))
    available = sorted(name for name in ("up-a", "up-b") if programs.get(name, {}).get("healthy", True))
    wait_for(lambda: sorted(httpx.get(running.gateway_url + "/health").json()["models"]["chat"]["available"])
             == available, 5, 0.05, f"verdicts read: {available}")


def stream_text(client, **extra) -> tuple[str, set[str]]:
    """The streamed answer's text and which upstreams sent its chunks."""
    text, served = "", set()
    for chunk in client.chat.completions.create(model="chat", messages=MESSAGES, stream=True, extra_body=extra):
        served.add(chunk.model_extra.get("served_by"))
        text += "".join(choice.delta.content or "" for choice in chunk.choices)
    return text, served


def test_a_held_stream_gets_comments_then_its_answer(running):
    judge(running, {"up-a": {"phase": "restarting", "healthy": False}, "up-b": {"phase": "loading", "healthy": False}})
    held_before = counter(running, "held_total")
    raw, whole = [], {}
    body = {"model": "chat", "messages": MESSAGES, "stream": True}

    def ask_whole() -> None:
        whole["answer"] = httpx.post(running.gateway_url + "/v1/chat/completions", timeout=30,
                                     json={"model": "chat", "messages": MESSAGES}).json()

    asker = threading.Thread(target=ask_whole)
    asker.start()
    try:
        with httpx.stream("POST", running.gateway_url + "/v1/chat/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = next(lines)
            assert first.startswith(": baremetal: waiting for a replica of chat") and "up-a: watchdog says restarting" in first
            assert wait_for(lambda: httpx.get(running.gateway_url + "/health").json()["models"]["chat"]["held"] == 2,
                            5, 0.05, "two requests held")
            judge(running, {"up-a": {"phase": "ready", "healthy": True}})
            raw = [first] + list(lines)
    finally:
        running.stack.watchdog_state_path.unlink(missing_ok=True)
        asker.join()
    events = [json.loads(line[6:]) for line in raw if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == FULL
    assert [line for line in raw if line][-1] == "data: [DONE]"
    assert whole["answer"]["choices"][0]["message"]["content"] == "Hello there."
    assert counter(running, "held_total") == held_before + 2 and counter(running, "held") == 0
    assert "held: no replica can take it (up-a: watchdog says restarting; up-b: watchdog says loading)" in gateway_log(running)


def test_past_the_hold_timeout_the_503_says_what_it_waited_for(client):
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="lonely", messages=MESSAGES)
    assert caught.value.status_code == 503 and 3.0 <= time.monotonic() - started < 10
    assert "'lonely'" in caught.value.message and "up-dead: connection refused" in caught.value.message
    assert "held 3 s (api.hold_timeout)" in caught.value.message
    with pytest.raises(openai.APIError) as caught:          # a stream had its comments: an error event
        stream_text(openai.OpenAI(base_url=client.base_url, api_key="none", max_retries=0), model="lonely")
    assert "held 3 s (api.hold_timeout)" in caught.value.message


def test_a_5xx_before_the_first_byte_is_retried_on_the_other_replica(client, running):
    retried = counter(running, "retried_total")
    answers = [client.chat.completions.create(model="chat", messages=MESSAGES,
                                              extra_body={"x_fault": {"up-a": "status:503"}}) for _ in range(4)]
    assert {a.model_extra["served_by"] for a in answers} == {"up-b"}
    assert counter(running, "retried_total") - retried >= 1           # the ones that tried up-a first
    assert "retried from up-a to up-b: answered 503" in gateway_log(running)


def drain(running, programs: list[str]) -> None:
    """Write drain.json and wait until the gateway has read it."""
    path = running.stack.run_dir / "drain.json"
    now = time.time()
    path.write_text(json.dumps({"updated_s": now, "programs": {
        name: {"since_s": now, "until_s": now + 30, "reason": "restart"} for name in programs}}))
    wait_for(lambda: httpx.get(running.gateway_url + "/health").json()["models"]["chat"]["draining"] == programs,
             5, 0.05, f"drain.json read: {programs}")


def test_a_draining_replica_gets_no_new_requests(client, running):
    drain(running, ["up-a"])
    try:
        served = {client.chat.completions.create(model="chat", messages=MESSAGES).model_extra["served_by"]
                  for _ in range(4)}
        assert served == {"up-b"}
    finally:
        drain(running, [])


def test_a_request_waiting_on_a_backend_found_stuck_goes_to_the_other(client, running):
    results = []
    drain(running, ["up-b"])                        # so that it goes to up-a first
    thread = threading.Thread(target=lambda: results.append(client.chat.completions.create(
        model="chat", messages=MESSAGES, extra_body={"x_fault": {"up-a": "delay:60"}})))
    thread.start()
    try:
        wait_for(lambda: any("delay:60" in r["body"] for r in httpx.get(
            f"http://127.0.0.1:{running.ports['a']}/_seen").json()["requests"]), 5, 0.05, "the request at up-a")
        drain(running, [])
        judge(running, {"up-a": {"phase": "stuck", "healthy": False}})
        thread.join(timeout=20)
    finally:
        running.stack.watchdog_state_path.unlink(missing_ok=True)
    assert results and results[0].model_extra["served_by"] == "up-b"
    assert "retried from up-a to up-b: up-a: watchdog says stuck while it waited" in gateway_log(running)
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{running.ports['a']}/_seen").json()["abandoned"], 5, 0.05,
             "up-a saw the gateway hang up")


def test_a_stream_that_breaks_goes_on_at_the_other_replica(client, running):
    migrated = counter(running, "migrated_total")
    # An earlier test may have left up-a backing off after refused connections (up to 30 s): wait until
    # it serves again, then stream until one stream started at up-a (and was moved when up-a dropped it).
    wait_for(lambda: "up-a" in stream_text(client)[1], 60, 0.5, "up-a serving again")
    results = []
    while len(results) < 8 and {"up-a", "up-b"} not in [served for _, served in results]:
        results.append(stream_text(client, x_fault={"up-a": "drop_after:3"}))
    assert [text for text, _ in results] == [FULL] * len(results)
    assert {"up-a", "up-b"} in [served for _, served in results], results
    assert counter(running, "migrated_total") > migrated
    assert "continues on up-b by replay after 15 characters" in gateway_log(running)


def test_answers_an_engine_aborts_as_it_stops_go_on_at_the_other_replica(client, running):
    """vLLM ends the requests of an engine that stops (a SIGTERM to its EngineCore, as a restart sends) with
    finish_reason "abort": the client must get the whole answer, from the other replica, not a short one."""
    migrated, retried = counter(running, "migrated_total"), counter(running, "retried_total")
    wait_for(lambda: "up-a" in stream_text(client)[1], 60, 0.5, "up-a serving again")
    results = []
    while len(results) < 8 and {"up-a", "up-b"} not in [served for _, served in results]:
        results.append(stream_text(client, x_fault={"up-a": "abort_after:3"}))
    assert [text for text, _ in results] == [FULL] * len(results)
    assert {"up-a", "up-b"} in [served for _, served in results], results
    assert counter(running, "migrated_total") > migrated
    aborting = {"x_fault": {"up-a": "abort_after:0"}}
    whole = [client.chat.completions.create(model="chat", messages=MESSAGES, extra_body=aborting) for _ in range(4)]
    assert {(a.choices[0].message.content, a.choices[0].finish_reason, a.model_extra["served_by"]) for a in whole} \
        == {("Hello there.", "stop", "up-b")}
    assert counter(running, "retried_total") > retried
    log = gateway_log(running)
    assert 'migrated from up-a to up-b: the engine aborted it (finish_reason "abort"' in log
    assert 'retried from up-a to up-b: the engine aborted it (finish_reason "abort"' in log


def test_a_stream_that_is_only_done_is_sent_again_not_passed_on_empty(client, running):
    """vLLM's API server, stopping, ends a request the engine had not given a token yet with `data: [DONE]`
    alone: no choice, no finish reason. That is no answer: the client must get the whole one elsewhere."""
    retried = counter(running, "retried_total")
    wait_for(lambda: "up-a" in stream_text(client)[1], 60, 0.5, "up-a serving again")
    results = [stream_text(client, x_fault={"up-a": "empty"}) for _ in range(6)]
    assert results == [(FULL, {"up-b"})] * len(results)
    assert counter(running, "retried_total") > retried
    assert "retried from up-a to up-b: the stream ended with no answer ([DONE] before any choice" \
        in gateway_log(running)


def test_a_replica_that_refuses_the_rest_of_a_stream_costs_no_re_send(client, running):
    """A started stream whose only other replica is down (restarting: its port refuses connections): each
    refused try reached no backend, so it does not count against api.migration_limit (2); the stream is
    held and goes on when the replica is back, instead of ending after two refusals."""
    wait_for(lambda: "up-a" in stream_text(client)[1], 60, 0.5, "up-a serving again")
    running.client.stop("up-b")
    result, lines, migrated = {}, len(gateway_log(running)), counter(running, "migrated_total")

    started = threading.Event()

    def ask() -> None:
        text, served = "", set()
        for chunk in client.chat.completions.create(model="chat", messages=MESSAGES, stream=True, extra_body={
                "x_interval_s": 0.2, "x_fault": {"up-a": "drop_after:3"}}):
            served.add(chunk.model_extra.get("served_by"))
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
            if text:
                started.set()
        result["got"] = text, served

    def tries_on_up_b() -> int:
        return gateway_log(running)[lines:].count("continues on up-b by replay")

    asker = threading.Thread(target=ask)
    try:
        asker.start()
        assert started.wait(10), "the stream started at up-a"
        drain(running, ["up-a"])                 # the rest can only come from up-b
        # up-a drops the stream; two tries at up-b are refused (with the limit of 2, the old count gave up here)
        wait_for(lambda: tries_on_up_b() >= 2, 10, 0.05, "two tries of the rest at up-b")
        running.client.start("up-b")
        asker.join(30)
    finally:
        drain(running, [])
        running.client.start("up-b")
    assert result["got"] == (FULL, {"up-a", "up-b"})
    assert counter(running, "migrated_total") - migrated == 1       # the drop; the refused tries are not re-sends
    log = gateway_log(running)[lines:]
    assert "migrated from up-a to up-b" in log and "continues on up-b by replay" in log
    assert "to up-b: connection refused" not in log and "gave up after" not in log


def test_a_silent_stream_is_given_up_after_the_stall_limit(client, running):
    started = time.monotonic()
    results = [stream_text(client, x_fault={"up-b": "hang_after:5"}) for _ in range(2)]       # one starts at up-b
    assert [text for text, _ in results] == [FULL, FULL]
    assert {"up-a", "up-b"} in [served for _, served in results]
    assert time.monotonic() - started >= 2.0
    assert "no byte for 2 s (stall limit 2 s)" in gateway_log(running)


def test_past_the_migration_limit_the_stream_ends_with_an_error_event(client, running):
    failed = counter(running, "migration_failed_total")
    with pytest.raises(openai.APIError) as caught:
        stream_text(client, x_fault={"up-a": "drop_after:2", "up-b": "drop_after:2"})
    assert "failed mid-stream" in caught.value.message
    assert "gave up after 2 re-sends (api.migration_limit = 2)" in caught.value.message
    assert counter(running, "migration_failed_total") == failed + 1


def test_a_migrated_stream_reports_and_meters_its_whole_usage(client, running):
    """The usage event the client asked for comes after the migration, and the gateway's per-key token
    count is what the client was told (the meter sees the merged stream the client gets)."""
    def completion_tokens() -> int:
        text = httpx.get(running.gateway_url + "/metrics").text
        line = 'baremetal_gateway_tokens_total{key="-",model="chat",kind="completion"} '
        return next((int(float(row[len(line):])) for row in text.splitlines() if row.startswith(line)), 0)

    before, migrated = completion_tokens(), counter(running, "migrated_total")
    texts, usages = [], []
    for _ in range(2):                                   # one starts at up-a, which drops it after 3 chunks
        stream = client.chat.completions.create(model="chat", messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True},
                                                extra_body={"x_fault": {"up-a": "drop_after:3"}})
        text = ""
        for chunk in stream:
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
            if chunk.usage is not None:
                usages.append(chunk.usage.completion_tokens)
        texts.append(text)
    assert texts == [FULL, FULL] and usages == [8, 8]
    assert counter(running, "migrated_total") > migrated
    wait_for(lambda: completion_tokens() == before + 16, 5, 0.05, "16 completion tokens metered")
