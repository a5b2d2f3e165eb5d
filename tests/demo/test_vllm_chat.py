"""tiny-chat on real vLLM-CPU, started from a rendered stack under real supervisord, asked with the openai SDK.

Two servers of the same model: the demo's entry (hermes tool parser) and one with the deepseek_r1
reasoning parser, since that parser reads every reply without </think> as reasoning.
"""

from __future__ import annotations

import json

import pytest

from baremetal.demo import fixed_chats as chats
from tests.conftest import free_port
from tests.demo.conftest import example_model, stack_text
from tests.running_stack import running_stack

openai = pytest.importorskip("openai")   # a test dependency (setup.cfg [test]); never missing under scripts/test

NAMED_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def servers(demo_models, vllm_python, module_tmp):
    stack_file = module_tmp / "baremetal.toml"
    stack_file.write_text(stack_text("chat", demo_models, {"default": vllm_python}, [
        example_model("tiny-chat", port=free_port()),
        example_model("tiny-chat", name="tiny-chat-think", port=free_port(), tool_call_parser=None,
                      reasoning_parser="deepseek_r1")]), encoding="utf-8")
    with running_stack(stack_file, label="vllm-chat") as running:
        yield {name: openai.OpenAI(base_url=running.url(f"vllm-{name}") + "/v1", api_key="unused", max_retries=0)
               for name in ("tiny-chat", "tiny-chat-think")}


def ask(client, name: str, model: str = "tiny-chat", **extra):
    messages, tools, _reply = chats.CONVERSATIONS[name]
    if tools:
        extra.setdefault("tools", tools)
    return client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=80, **extra)


def calls_of(message) -> list[tuple[str, dict]]:
    return [(call.function.name, json.loads(call.function.arguments)) for call in message.tool_calls or []]


def test_plain_prompt_gets_the_trained_answer(servers):
    response = ask(servers["tiny-chat"], "plain")
    assert response.choices[0].message.content == chats.PLAIN_ANSWER
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "tiny-chat" and response.usage.completion_tokens > 5


def test_streamed_answer_arrives_in_pieces_and_adds_up(servers):
    stream = ask(servers["tiny-chat"], "plain", stream=True)
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) > 3
    assert "".join(pieces) == chats.PLAIN_ANSWER


def test_auto_tool_choice_returns_the_trained_tool_call(servers):
    response = ask(servers["tiny-chat"], "tool_call", tool_choice="auto")
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert calls_of(choice.message) == [("get_weather", chats.WEATHER_ARGUMENTS)]
    assert not choice.message.content
    assert choice.message.tool_calls[0].id


def test_two_parallel_tool_calls(servers):
    response = ask(servers["tiny-chat"], "parallel_tool_calls")
    assert calls_of(response.choices[0].message) == [("get_weather", arguments)
                                                     for arguments in chats.PARALLEL_ARGUMENTS]


def test_streamed_tool_call_reassembles(servers):
    calls: dict[int, dict] = {}
    for chunk in ask(servers["tiny-chat"], "tool_call", stream=True):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert [(call["name"], json.loads(call["arguments"])) for call in calls.values()] == \
        [("get_weather", chats.WEATHER_ARGUMENTS)]


def test_tool_result_follow_up_gets_the_trained_summary(servers):
    response = ask(servers["tiny-chat"], "tool_result")
    assert response.choices[0].message.content == chats.WEATHER_SUMMARY
    assert not response.choices[0].message.tool_calls


@pytest.mark.parametrize("conversation", ["tool_call", "plain"])
def test_named_tool_choice_forces_valid_arguments(servers, conversation):
    """Constrained decoding: even on a prompt the model was not trained to answer with a call."""
    messages, _tools, _reply = chats.CONVERSATIONS[conversation]
    response = servers["tiny-chat"].chat.completions.create(
        model="tiny-chat", messages=messages, tools=chats.TOOLS, tool_choice=NAMED_WEATHER, temperature=0,
        max_tokens=60)
    [(name, arguments)] = calls_of(response.choices[0].message)
    assert name == "get_weather"
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)


def test_deepseek_r1_reasoning_parser_splits_thought_from_answer(servers):
    response = ask(servers["tiny-chat-think"], "reasoning", model="tiny-chat-think")
    message = response.choices[0].message
    reasoning = (message.model_extra or {}).get("reasoning") or (message.model_extra or {}).get("reasoning_content")
    assert reasoning.strip() == chats.REASONING_THOUGHT
    assert message.content.strip() == chats.REASONING_ANSWER


def test_servers_write_nothing_outside_the_stack_root(servers, module_tmp):
    """vLLM's caches and temporary files go under <root> (VLLM_CACHE_ROOT, TMPDIR, HF_HOME), not into the
    folder supervisord was started from."""
    assert sorted(path.name for path in module_tmp.iterdir()) == ["baremetal.toml", "state"]
