"""Prompt building for FastChat workers: the model's own template with tools, the fallback, prefill for
tool_choice, and message checks. Pure; expected prompts written out in full."""

from __future__ import annotations

import json

import pytest

from baremetal.gateway.chat_template import ModelTemplate, TemplateRenderer
from baremetal.gateway.conversation import Conversation
from baremetal.gateway.errors import GatewayError
from baremetal.gateway.prompts import build_prompt, normalise_messages, tool_system_prompt
from baremetal.gateway.tool_calls import tool_request
from tests.gateway.templates import CHATML, HERMES, LLAMA

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
ROUND_TRIP = ASK + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}]


def renderer(source: str, **tokens) -> TemplateRenderer:
    return TemplateRenderer(ModelTemplate("test", source, special_tokens=tokens, stop_token_ids=(7,)), "m")


def prompt(messages, payload=None, source=HERMES, conversation=None, stop=()):
    tools = tool_request(payload or {})
    return build_prompt(normalise_messages(messages), tools, renderer(source) if source else None, conversation, stop)


def test_hermes_template_gets_the_tools_natively():
    built = prompt(ASK, {"tools": [TOOL]})
    assert built.text == ("<|im_start|>system\nBe brief.\n\n# Tools\n<tools>\n" + json.dumps(TOOL) + "\n</tools>\n"
                          'Answer calls as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>\n'
                          "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert built.prefill == "" and built.stop == () and built.stop_token_ids == (7,)


def test_hermes_template_renders_the_round_trip_with_arguments_as_objects():
    built = prompt(ROUND_TRIP, {"tools": [TOOL]})
    assert built.text.endswith(
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n')


def test_tool_choice_none_leaves_tools_out_but_keeps_history():
    built = prompt(ROUND_TRIP, {"tools": [TOOL], "tool_choice": "none"})
    assert "<tools>" not in built.text and "<tool_response>" in built.text


def test_required_and_named_tool_choice_start_the_answer():
    assert prompt(ASK, {"tools": [TOOL], "tool_choice": "required"}).prefill == "<tool_call>\n"
    named = prompt(ASK, {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    assert named.prefill == '<tool_call>\n{"name": "get_weather", "arguments":'
    assert named.text.endswith("<|im_start|>assistant\n" + named.prefill)


def test_one_call_only_stops_after_the_first_call():
    assert prompt(ASK, {"tools": [TOOL], "parallel_tool_calls": False}, stop=("END",)).stop == ("END", "</tool_call>")


def test_fallback_for_a_template_without_tools():
    built = prompt(ROUND_TRIP, {"tools": [TOOL]}, source=CHATML)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert built.text == (f"<|im_start|>system\nBe brief.\n\n{tool_system_prompt((TOOL,))}<|im_end|>\n"
                          "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
                          f"<|im_start|>assistant\n{call}<|im_end|>\n"
                          '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>\n'
                          "<|im_start|>assistant\n")


def test_fallback_merges_consecutive_tool_results_into_one_user_turn():
    messages = ROUND_TRIP + [{"role": "tool", "tool_call_id": "call_2", "content": "second"}]
    built = prompt(messages, {"tools": [TOOL]}, source=CHATML)
    assert ('<tool_response>\n{"temp_c": 21}\n</tool_response>\n<tool_response>\nsecond\n</tool_response>'
            in built.text)


def test_fallback_with_the_workers_conversation_template():
    chatml = Conversation.from_json({"name": "chatml", "system_template": "<|im_start|>system\n{system_message}",
                                     "system_message": "", "roles": ["<|im_start|>user", "<|im_start|>assistant"],
                                     "messages": [], "offset": 0, "sep_style": 9, "sep": "<|im_end|>",
                                     "sep2": None, "stop_str": "<|im_end|>", "stop_token_ids": [5]})
    built = prompt(ASK, {"tools": [TOOL]}, source=None, conversation=chatml)
    assert built.text == (f"<|im_start|>system\nBe brief.\n\n{tool_system_prompt((TOOL,))}<|im_end|>\n"
                          "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert built.stop == ("<|im_end|>",) and built.stop_token_ids == (5,)
    assistant = Conversation.from_json({"name": "q", "system_template": "<|im_start|>system\n{system_message}",
                                        "system_message": "You help.", "roles": ["<|im_start|>user", "<|im_start|>assistant"],
                                        "messages": [], "sep_style": 9, "sep": "<|im_end|>"})
    built = prompt(ASK[1:], {"tools": [TOOL]}, source=None, conversation=assistant)   # no system message sent
    assert built.text.startswith(f"<|im_start|>system\nYou help.\n\n{tool_system_prompt((TOOL,))}<|im_end|>\n")
    assert prompt(ASK[1:], source=None, conversation=assistant).text.startswith("<|im_start|>system\nYou help.<|im_end|>")


def test_special_tokens_and_bos():
    template = ModelTemplate("t", LLAMA, special_tokens={"bos_token": "<s>", "eos_token": "</s>"}, strip_bos=True)
    messages = normalise_messages([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert TemplateRenderer(template, "m").render(messages, None) == "[INST] hi [/INST]yo</s>"
    kept = ModelTemplate("t", LLAMA, special_tokens={"bos_token": "<s>", "eos_token": "</s>"})
    assert TemplateRenderer(kept, "m").render(messages, None).startswith("<s>[INST]")


def test_template_refusal_is_a_400():
    with pytest.raises(GatewayError) as caught:
        prompt(ROUND_TRIP, source=LLAMA)
    assert caught.value.status == 400 and "system messages are not supported" in caught.value.message


def test_template_that_does_not_compile_is_a_400():
    with pytest.raises(GatewayError) as caught:
        renderer("{% for x in %}")
    assert caught.value.status == 400 and "does not compile" in caught.value.message


MESSAGES = {
    "empty": ([], "messages"),
    "not an object": (["hi"], "messages[0]"),
    "unknown role": ([{"role": "robot", "content": "x"}], "messages[0].role"),
    "user without content": ([{"role": "user"}], "messages[0].content"),
    "image part": ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
                   "messages[0].content[0]"),
    "content a number": ([{"role": "user", "content": 3}], "messages[0].content"),
    "tool_calls not a list": ([{"role": "assistant", "tool_calls": {}}], "messages[0].tool_calls"),
    "tool call without name": ([{"role": "assistant", "tool_calls": [{"function": {}}]}], "messages[0].tool_calls[0]"),
}


@pytest.mark.parametrize("messages, param", MESSAGES.values(), ids=MESSAGES.keys())
def test_bad_messages_are_400_naming_the_field(messages, param):
    with pytest.raises(GatewayError) as caught:
        normalise_messages(messages)
    assert caught.value.status == 400 and caught.value.param == param


def test_messages_normalised():
    messages = normalise_messages([
        {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}])
    assert messages == [{"role": "system", "content": "a\nb"},
                        {"role": "assistant", "content": "", "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]
