"""The gateway under supervisord in front of real HTTP upstreams (tests.gateway.upstream, run as
[[program]] backends), spoken to with the openai SDK and httpx: pass-through, errors, keys, replicas,
refused and unhealthy backends, client disconnects, metrics."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests.support.upstreams import dead_program, upstream_program, upstream_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real supervisord and real servers

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def running():
    def text(root, ports):
        (root / "keys").write_text(f"# gateway keys\n{KEY}\n")
        programs = "".join(upstream_program(name, ports[name], model, task)
                           for name, model, task in (("a", "chat", "chat"), ("b", "chat", "chat"),
                                                     ("emb", "embedder", "embed")))
        return f'''
[stack]
name = "gwtest"
root = "state"
[api]
port = {ports["gateway"]}
api_keys = ["file:{root / 'keys'}"]
hold_timeout = "1s"
[watchdog]
enabled = false
{programs}{dead_program(ports["dead"], "lonely")}'''

    with upstream_stack(("a", "b", "emb"), text) as stack:
        yield stack


@pytest.fixture
def client(running):
    return openai.OpenAI(base_url=running.gateway_url + "/v1", api_key=KEY, max_retries=0, timeout=30)


def seen(running, name):
    return httpx.get(f"http://127.0.0.1:{running.ports[name]}/_seen").json()


def test_models_lists_every_model(client):
    assert sorted(model.id for model in client.models.list()) == ["chat", "embedder", "lonely"]
    assert client.models.retrieve("embedder").id == "embedder"


def test_chat_passes_through_unchanged(client, running):
    reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}],
                                           extra_body={"x_custom": {"kept": True}})
    assert reply.choices[0].message.content == "Hello there."
    served_by = reply.model_extra["served_by"]
    last = seen(running, served_by[3:])["requests"][-1]
    assert last["path"] == "/v1/chat/completions"
    assert json.loads(last["body"])["x_custom"] == {"kept": True}
    assert "authorization" not in last["headers"]        # the client's key stays at the gateway


def test_stream_bytes_arrive_as_the_backend_sent_them(running):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True, "x_chunks": 3}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", running.gateway_url + "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        through_gateway = b"".join(response.iter_raw())
    upstream = running.ports[json.loads(through_gateway.split(b"\n")[0][6:])["served_by"][3:]]
    with httpx.stream("POST", f"http://127.0.0.1:{upstream}/v1/chat/completions", json=body) as response:
        direct = b"".join(response.iter_raw())
    assert through_gateway == direct


def test_stream_with_the_sdk(client):
    stream = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], stream=True,
                                            extra_body={"x_chunks": 4})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "tok0 tok1 tok2 tok3 "


def test_embeddings_rerank_and_score_routes(client, running):
    assert len(client.embeddings.create(model="embedder", input=["a", "b"]).data) == 2
    for path in ("/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/score"):
        response = httpx.post(running.gateway_url + path, headers={"Authorization": f"Bearer {KEY}"},
                              json={"model": "embedder", "query": "q", "documents": ["x", "y"]})
        assert response.status_code == 200, path
        assert seen(running, "emb")["requests"][-1]["path"] == path


def test_keys(running):
    for key in ("wrong-key", ""):
        with pytest.raises(openai.AuthenticationError) as caught:
            openai.OpenAI(base_url=running.gateway_url + "/v1", api_key=key or "x", max_retries=0,
                          default_headers={} if key else {"Authorization": ""}).models.list()
        assert caught.value.status_code == 401
        assert caught.value.body["code"] == "invalid_api_key" and KEY not in str(caught.value.body)
    response = httpx.post(running.gateway_url + "/v1/chat/completions", json={"model": "chat", "messages": []})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(running.gateway_url + "/health").status_code == 200          # open on purpose
    assert httpx.get(running.gateway_url + "/metrics").status_code == 401
    text = "".join(path.read_text() for path in running.stack.logs_dir.glob("api*"))
    assert KEY not in text


def test_bad_requests_are_openai_errors(client, running):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    url = running.gateway_url + "/v1/chat/completions"
    cases = {b"{not json": "not valid JSON", b'{"model": 3, "messages": []}': "'model' must be a string",
             b'{"model": "chat", "messages": [], "stream": "yes"}': "'stream' must be a boolean",
             b'{"model": "chat", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}": "too deeply"}
    for body, words in cases.items():
        response = httpx.post(url, content=body, headers=headers, timeout=60)
        assert response.status_code == 400 and words in response.json()["error"]["message"], body[:40]
    response = httpx.post(url, content=b" " * (33 * 1024 * 1024), headers=headers, timeout=60)
    assert response.status_code == 413 and "too large" in response.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert "'gpt-5'" in caught.value.message and "chat, embedder, lonely" in caught.value.message
    with pytest.raises(openai.UnprocessableEntityError):            # a backend's own error passes through
        client.chat.completions.create(model="chat", messages=[], extra_body={"x_status": 422})
    response = httpx.post(running.gateway_url + "/v1/unknown", headers=headers, json={})
    assert response.status_code == 404 and "error" in response.json()


def test_only_backend_refusing_is_a_503_naming_the_model_after_the_hold(client):
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="lonely", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503 and time.monotonic() - started >= 1.0       # api.hold_timeout
    assert "'lonely'" in caught.value.message and "up-dead: connection refused" in caught.value.message
    assert "held 1 s (api.hold_timeout)" in caught.value.message


def test_replicas_go_to_the_least_busy(client, running):
    slow = threading.Thread(target=lambda: client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], extra_body={"x_delay_s": 3}))
    slow.start()
    wait_for(lambda: any(m["in_flight"] for m in httpx.get(running.gateway_url + "/health").json()["models"].values()),
             5, 0.02, "the slow request in flight")
    busy = next(n for n in ("a", "b") if seen(running, n)["requests"][-1]["body"].find("x_delay_s") >= 0)
    others = {client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
              .model_extra["served_by"] for _ in range(4)}
    assert others == {"up-" + ("b" if busy == "a" else "a")}
    slow.join()
    rotating = [client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
                .model_extra["served_by"] for _ in range(4)]
    assert sorted(rotating) == ["up-a", "up-a", "up-b", "up-b"]


def test_refused_replica_is_skipped_then_used_again(client, running):
    running.client.stop("up-b")
    try:
        served = {client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
                  .model_extra["served_by"] for _ in range(6)}
        assert served == {"up-a"}
        metrics = httpx.get(running.gateway_url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        assert 'baremetal_gateway_backend_errors_total{backend="up-b",reason="unreachable"}' in metrics
    finally:
        running.client.start("up-b")
    running.wait_serving([f"http://127.0.0.1:{running.ports['b']}/health"], 30)
    wait_for(lambda: client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
             .model_extra["served_by"] == "up-b", 10, 0.2, "up-b serving again")


def test_watchdog_verdicts(client, running):
    verdicts = running.stack.watchdog_state_path

    def judge(programs: dict, available: list[str], age_s: float = 0) -> None:
        """Write the watchdog's file and wait until the gateway has read it (it re-checks every 0.25 s)."""
        verdicts.write_text(json.dumps({"updated_s": time.time() - age_s, "programs": programs}))
        wait_for(lambda: httpx.get(running.gateway_url + "/health").json()["models"]["chat"]["available"]
                 == available, 5, 0.05, f"verdict read: {available}")

    def served_by() -> str:
        return client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}]) \
            .model_extra["served_by"]

    try:
        judge({"up-a": {"phase": "stuck", "healthy": False}, "up-b": {"phase": "ready", "healthy": True}}, ["up-b"])
        assert {served_by() for _ in range(4)} == {"up-b"}
        judge({"up-a": {"phase": "stuck", "healthy": False}, "up-b": {"phase": "restarting", "healthy": False}}, [])
        with pytest.raises(openai.InternalServerError) as caught:
            served_by()
        assert caught.value.status_code == 503
        assert "up-a: watchdog says stuck" in caught.value.message and "up-b: watchdog says restarting" in caught.value.message
        # still "ready" but failing probes: a last resort, so one slow probe is not a 503
        judge({"up-a": {"phase": "ready", "healthy": False}, "up-b": {"phase": "stuck", "healthy": False}}, ["up-a"])
        assert served_by() == "up-a"
        judge({"up-a": {"phase": "stuck", "healthy": False}, "up-b": {"phase": "stuck", "healthy": False}},
              ["up-a", "up-b"], age_s=3600)            # stale: the watchdog is not running, ignored
        assert served_by() in ("up-a", "up-b")
    finally:
        verdicts.unlink(missing_ok=True)


def test_client_disconnect_cancels_the_upstream_request(running):
    headers = {"Authorization": f"Bearer {KEY}"}
    before = {n: len(seen(running, n)["abandoned"]) for n in ("a", "b")}
    with pytest.raises(httpx.ReadTimeout):            # non-streamed: the client gives up while the backend works
        httpx.post(running.gateway_url + "/v1/chat/completions", headers=headers, timeout=0.5,
                   json={"model": "chat", "messages": [], "x_delay_s": 20})
    body = {"model": "chat", "messages": [], "stream": True, "x_chunks": 100, "x_interval_s": 0.2}
    with httpx.stream("POST", running.gateway_url + "/v1/chat/completions", headers=headers, json=body) as response:
        next(response.iter_raw())                     # streamed: read the first chunk and hang up
    wait_for(lambda: sum(len(seen(running, n)["abandoned"]) - before[n] for n in ("a", "b")) == 2, 10, 0.1,
             "both upstream requests abandoned")


def test_metrics_count_requests_per_model_and_backend(client, running):
    client.embeddings.create(model="embedder", input="x")
    text = httpx.get(running.gateway_url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'baremetal_gateway_requests_total{model="embedder",backend="up-emb",endpoint="embeddings",status="200"}' in text
    assert 'baremetal_gateway_in_flight{model="embedder",backend="up-emb"} 0' in text
    assert 'baremetal_gateway_requests_total{model="",backend="",endpoint="chat",status="401"}' in text
    assert "baremetal_gateway_time_to_first_byte_seconds_bucket" in text
