"""Keys with names, model lists and limits, request ids and trace headers, every vLLM path routed by model:
the gateway under real supervisord in front of real HTTP upstreams (tests.gateway.upstream as [[program]]
backends: "chat" of task chat, "embedder" of task embed), spoken to with the openai SDK and httpx."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import openai
import pytest

import psutil

from tests.support.engine_envs import REPO
from tests.support.ports import free_ports
from tests.support.running import start_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e   # real supervisord and real servers

OPS = "ops-key-0123456789"
KEYS = {"rpm": "rpm-key-0123456789", "tpm": "tpm-key-0123456789", "solo": "solo-key-0123456789",
        "chat-only": "chat-only-key-0123456789", "pooled": "pooled-key-0123456789"}
LIMITS = {"rpm": "requests_per_minute = 2", "tpm": "tokens_per_minute = 10", "solo": "max_concurrent = 1",
          "chat-only": 'models = ["chat"]', "pooled": "requests_per_minute = 20"}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def running():
    root = Path(tempfile.mkdtemp(prefix="bm-gk-", dir="/tmp"))
    ports = dict(zip(("gateway", "chat", "emb", "logged", "pair"), free_ports(5)))
    text = f'''
[stack]
name = "gwkeys"
root = "state"
[api]
port = {ports["gateway"]}
api_keys = ["{OPS}"]
[watchdog]
enabled = false
'''
    for name, key in KEYS.items():
        text += f'[[api.key]]\nname = "{name}"\nkey = "{key}"\n{LIMITS[name]}\n'
    for name, task in (("chat", "chat"), ("emb", "embed")):
        port = ports[name]
        model = "embedder" if name == "emb" else "chat"
        text += f'''
[[program]]
name = "up-{name}"
command = ["{sys.executable}", "-m", "tests.gateway.upstream", "--port", "{port}", "--name", "up-{name}"]
directory = "{REPO}"
health = "http://127.0.0.1:{port}/health"
serves = {{ model = "{model}", task = "{task}", url = "http://127.0.0.1:{port}" }}
'''
    text += f'''
[[program]]
name = "logged"
command = ["{sys.executable}", "-m", "baremetal", "gateway", "-c", "{root / 'baremetal.toml'}", "--port",
           "{ports['logged']}", "--access-log"]
health = "http://127.0.0.1:{ports['logged']}/health"

[[program]]
name = "pair"
command = ["{sys.executable}", "-m", "baremetal", "gateway", "-c", "{root / 'baremetal.toml'}", "--port",
           "{ports['pair']}", "--workers", "2"]
health = "http://127.0.0.1:{ports['pair']}/health"
'''
    (root / "baremetal.toml").write_text(text)
    stack = start_stack(root / "baremetal.toml")
    try:
        stack.wait_serving([f"http://127.0.0.1:{ports[n]}/health" for n in ("chat", "emb", "logged", "pair")]
                           + [f"{stack.gateway_url}/health"], timeout_s=60)
        stack.ports = ports
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def client(running, key: str = OPS) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.gateway_url + "/v1", api_key=key, max_retries=0, timeout=30)


def last_seen(running, name: str) -> dict:
    return httpx.get(f"http://127.0.0.1:{running.ports[name]}/_seen").json()["requests"][-1]


def metrics(running) -> str:
    return httpx.get(running.gateway_url + "/metrics", headers={"Authorization": f"Bearer {OPS}"}).text


def test_request_id_and_trace_context_go_through_and_the_id_comes_back(running):
    url = f"http://127.0.0.1:{running.ports['logged']}/v1/chat/completions"
    trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=1"}
    response = httpx.post(url, json={"model": "chat", "messages": HI}, headers={
        "Authorization": f"Bearer {KEYS['rpm']}", "X-Request-Id": "client-req-42", "User-Agent": "probe/1.0", **trace})
    assert response.status_code == 200 and response.headers["x-request-id"] == "client-req-42"
    seen = last_seen(running, "chat")["headers"]
    assert seen["x-request-id"] == "client-req-42" and seen["user-agent"] == "probe/1.0"
    assert {name: seen[name] for name in trace} == trace and "authorization" not in seen
    made = httpx.post(url, json={"model": "chat", "messages": HI}, headers={"Authorization": f"Bearer {OPS}"})
    assert re.fullmatch(r"req-[0-9a-f]{32}", made.headers["x-request-id"])
    assert last_seen(running, "chat")["headers"]["x-request-id"] == made.headers["x-request-id"]
    forged = httpx.post(url, json={"model": "chat", "messages": HI},
                        headers={"Authorization": f"Bearer {OPS}", "X-Request-Id": "a b"})
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_request_id"
    log = running.stack.logs_dir / "logged.err.log"
    line = wait_for(lambda: next((line for line in log.read_text().splitlines() if "client-req-42" in line), None),
                    10, what="the access line of the request")
    assert "POST /v1/chat/completions 200 model=chat backend=up-chat key=rpm tokens=5+3" in line
    assert not any(key in log.read_text() for key in (*KEYS.values(), OPS))


def test_a_key_limited_to_one_model_sees_only_that_one(running):
    chat_only = client(running, KEYS["chat-only"])
    assert [model.id for model in chat_only.models.list()] == ["chat"]
    assert chat_only.chat.completions.create(model="chat", messages=HI).choices[0].message.content == "Hello there."
    with pytest.raises(openai.NotFoundError) as caught:
        chat_only.embeddings.create(model="embedder", input="x")
    assert "'embedder' does not exist" in caught.value.message and "Models served: chat." in caught.value.message
    assert sorted(model.id for model in client(running).models.list()) == ["chat", "embedder"]


def test_requests_per_minute(running):
    limited = client(running, KEYS["rpm"])
    for _ in range(2):
        limited.chat.completions.create(model="chat", messages=HI)
    with pytest.raises(openai.RateLimitError) as caught:
        limited.chat.completions.create(model="chat", messages=HI)
    assert caught.value.body["code"] == "rate_limit_exceeded" and "requests per minute" in caught.value.message
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    text = metrics(running)
    assert 'baremetal_gateway_rate_limited_total{key="rpm",limit="requests_per_minute"} 1' in text
    assert 'baremetal_gateway_key_requests_total{key="rpm",model="chat",status="429"} 1' in text
    client(running).chat.completions.create(model="chat", messages=HI)       # another key is not limited


def test_tokens_per_minute_count_what_the_backend_reported(running):
    limited = client(running, KEYS["tpm"])
    for _ in range(2):                          # 8 tokens each: the second starts at 8 of 10
        assert limited.chat.completions.create(model="chat", messages=HI).usage.total_tokens == 8
    with pytest.raises(openai.RateLimitError) as caught:
        limited.chat.completions.create(model="chat", messages=HI)
    assert "tokens per minute: limit 10, used 16" in caught.value.message
    text = metrics(running)
    assert 'baremetal_gateway_tokens_total{key="tpm",model="chat",kind="prompt"} 10' in text
    assert 'baremetal_gateway_tokens_total{key="tpm",model="chat",kind="completion"} 6' in text
    assert 'baremetal_gateway_rate_limited_total{key="tpm",limit="tokens_per_minute"} 1' in text


def test_max_concurrent(running):
    solo = client(running, KEYS["solo"])
    slow = threading.Thread(target=lambda: solo.chat.completions.create(model="chat", messages=HI,
                                                                        extra_body={"x_delay_s": 2}))
    slow.start()
    wait_for(lambda: httpx.get(running.gateway_url + "/health").json()["models"]["chat"]["in_flight"], 5, 0.02,
             "the slow request in flight")
    with pytest.raises(openai.RateLimitError) as caught:
        solo.chat.completions.create(model="chat", messages=HI)
    assert caught.value.response.headers["retry-after"] == "1" and "requests at once" in caught.value.message
    slow.join()
    assert solo.chat.completions.create(model="chat", messages=HI).choices[0].message.content == "Hello there."


def test_anthropic_clients_send_x_api_key_and_get_anthropic_errors(running):
    headers = {"x-api-key": OPS, "anthropic-version": "2023-06-01"}
    body = {"model": "chat", "max_tokens": 8, "messages": HI}
    assert httpx.post(running.gateway_url + "/v1/messages", json=body, headers=headers).status_code == 200
    assert last_seen(running, "chat")["path"] == "/v1/messages"
    missing = httpx.post(running.gateway_url + "/v1/messages", json=body | {"model": "claude"}, headers=headers)
    assert missing.status_code == 404 and missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "not_found_error" and "'claude'" in missing.json()["error"]["message"]
    wrong = httpx.post(running.gateway_url + "/v1/messages", json=body, headers={"x-api-key": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"


def test_every_vllm_path_is_routed_by_model_and_a_wrong_task_is_a_400(running):
    headers = {"Authorization": f"Bearer {OPS}"}
    for path, model, upstream in (("/tokenize", "chat", "chat"), ("/detokenize", "embedder", "emb"),
                                  ("/v1/responses", "chat", "chat"), ("/pooling", "embedder", "emb"),
                                  ("/v2/embed", "embedder", "emb"), ("/v1/messages/count_tokens", "chat", "chat")):
        response = httpx.post(running.gateway_url + path, json={"model": model, "prompt": "x"}, headers=headers)
        assert response.status_code == 200, (path, response.text)
        assert last_seen(running, upstream)["path"] == path
    wrong = httpx.post(running.gateway_url + "/v1/chat/completions", json={"model": "embedder", "messages": HI},
                       headers=headers)
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "model_task_mismatch"
    assert 'an embedding model (task = "embed")' in wrong.json()["error"]["message"]
    assert "/v1/embeddings" in wrong.json()["error"]["message"]
    version = httpx.get(running.gateway_url + "/version", headers=headers).json()
    assert version["version"] == version["baremetal"] and version["backends"] == {}


def test_two_gateway_processes_share_the_port_the_limits_and_the_metrics(running):
    """api.workers = 2: each connection goes to one of two processes; a key's limit holds across them and
    /metrics, whichever process answers it, counts the requests of both."""
    workers = psutil.Process(running.client.process("pair").pid).children()
    assert len(workers) == 2
    url = f"http://127.0.0.1:{running.ports['pair']}"
    headers = {"Authorization": f"Bearer {KEYS['pooled']}"}
    for _ in range(20):                              # a new connection each: the kernel picks the process
        with httpx.Client() as fresh:
            assert fresh.post(url + "/v1/chat/completions", json={"model": "chat", "messages": HI},
                              headers=headers).status_code == 200
    with httpx.Client() as fresh:
        refused = fresh.post(url + "/v1/chat/completions", json={"model": "chat", "messages": HI}, headers=headers)
    assert refused.status_code == 429 and "requests per minute: limit 20, used 20" in refused.json()["error"]["message"]
    pages = running.stack.run_dir / "gateway-workers"
    pattern = re.compile(r'key_requests_total\{key="pooled",model="chat",status="200"\} (\d+)')

    def counts() -> list[int]:
        return [int(found.group(1)) if (found := pattern.search(page.read_text())) else 0
                for page in sorted(pages.glob("worker-*.prom"))]

    # each process publishes its counters every second; both took some of the 20
    served = wait_for(lambda: found if sum(found := counts()) == 20 else None, 10, 0.2, "both workers' pages")
    assert len(served) == 2 and min(served) > 0
    # the watchdog's witness: each process its own requests in flight, the first publishes run/gateway.json
    assert sorted(page.name for page in pages.glob("witness-*.json")) == ["witness-0.json", "witness-1.json"]

    def scraped() -> str:
        with httpx.Client() as fresh:             # whichever process answers, it counts both
            return fresh.get(url + "/metrics", headers={"Authorization": f"Bearer {OPS}"}).text

    line = 'baremetal_gateway_key_requests_total{key="pooled",model="chat",status="200"} 20'
    assert all(line in scraped() for _ in range(4))


def test_a_stored_response_is_asked_of_the_backend_that_made_it(running):
    headers = {"Authorization": f"Bearer {OPS}"}
    made = httpx.post(running.gateway_url + "/v1/responses", json={"model": "chat", "input": "hi"}, headers=headers)
    response_id = made.json()["id"]
    assert response_id.startswith("resp_up") and made.json()["served_by"] == "up-chat"
    again = httpx.get(f"{running.gateway_url}/v1/responses/{response_id}", headers=headers)
    assert again.status_code == 200 and again.json() == {"id": response_id, "object": "response", "served_by": "up-chat"}
    cancelled = httpx.post(f"{running.gateway_url}/v1/responses/{response_id}/cancel", headers=headers)
    assert cancelled.status_code == 200 and last_seen(running, "chat")["path"] == f"/v1/responses/{response_id}/cancel"
    unknown = httpx.get(running.gateway_url + "/v1/responses/resp_nobody", headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "response_not_found"
    assert httpx.get(f"{running.gateway_url}/v1/responses/{response_id}",
                     headers={"Authorization": f"Bearer {KEYS['chat-only']}"}).status_code == 200
