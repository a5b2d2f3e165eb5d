"""The Responses API on the chat path: requests as the openai SDK and LangChain send them become chat requests,
chat answers become Responses (whole, and the streamed events the SDK reads), what cannot be done is a 400."""

from __future__ import annotations

import asyncio
import json

import pytest

from baremetal.gateway.errors import GatewayError
from baremetal.gateway.exchange import ClientRequest, Responder
from baremetal.gateway.responses import Shell, chat_payload, whole_response
from baremetal.gateway.responses_stream import StreamTranslator

WEATHER = {"type": "function", "name": "get_weather", "description": "Get the weather.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": None}


def test_a_conversation_with_a_tool_round_trip_becomes_chat_messages():
    # what LangChain's ChatOpenAI(use_responses_api=True) sends after a tool call and its result
    payload = {"model": "m", "instructions": "Be brief.", "tools": [WEATHER], "tool_choice": {"type": "function",
               "name": "get_weather"}, "max_output_tokens": 40, "temperature": 0, "stream": True, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}], "type": "message"},
        {"type": "function_call", "name": "get_weather", "arguments": '{"city": "Paris"}', "call_id": "call_1"},
        {"type": "function_call_output", "output": "sunny, 18 C", "call_id": "call_1"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny.",
                                                               "annotations": []}]},
        {"role": "developer", "content": "Answer in French."}]}
    assert chat_payload(payload) == {
        "model": "m", "max_tokens": 40, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather.",
                                                    "parameters": WEATHER["parameters"]}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Weather in Paris?"},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"id": "call_1", "type": "function",
                          "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                     {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 18 C"},
                     {"role": "assistant", "content": "Sunny."},
                     {"role": "system", "content": "Answer in French."}]}
    assert chat_payload({"model": "m", "input": "Hi"})["messages"] == [{"role": "user", "content": "Hi"}]


REFUSED = {
    "previous_response_id": ({"previous_response_id": "resp_1"}, "previous_response_id"),
    "web search": ({"tools": [{"type": "web_search"}]}, "tools"),
    "json schema": ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text.format"),
    "reasoning": ({"reasoning": {"effort": "low"}}, "reasoning"),
    "image": ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content"),
    "no input": ({"input": []}, "input"),
}


@pytest.mark.parametrize("extra, param", REFUSED.values(), ids=REFUSED.keys())
def test_what_fastchat_cannot_do_is_a_400_naming_the_field(extra, param):
    with pytest.raises(GatewayError) as caught:
        chat_payload({"model": "m", "input": "Hi"} | extra)
    assert caught.value.status == 400 and caught.value.param == param


def call(payload: dict) -> ClientRequest:
    return ClientRequest("responses", "/v1/responses", json.dumps(payload).encode(), payload, "tiny-chat")


def test_a_whole_chat_answer_becomes_a_response():
    completion = {"choices": [{"message": {"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 30, "completion_tokens": 12}}
    response = whole_response(Shell(call({"model": "tiny-chat", "input": "Hi", "tools": [WEATHER]})), completion)
    assert response["object"] == "response" and response["status"] == "completed" and response["id"].startswith("resp_")
    message, function = response["output"]
    assert message["type"] == "message" and message["content"] == [
        {"type": "output_text", "text": "Let me look.", "annotations": []}]
    assert {k: function[k] for k in ("type", "call_id", "name", "arguments", "status")} == {
        "type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": '{"city": "Paris"}',
        "status": "completed"}
    assert response["usage"]["input_tokens"] == 30 and response["usage"]["output_tokens"] == 12
    assert response["usage"]["total_tokens"] == 42 and response["tools"] == [WEATHER]


def sse(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def delta(content=None, tool_calls=None, finish=None) -> bytes:
    body = {k: v for k, v in (("content", content), ("tool_calls", tool_calls)) if v is not None}
    return sse({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": body, "finish_reason": finish}]})


def run_stream(chunks: list[bytes]) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def main() -> None:
        translator = StreamTranslator(Responder(send, 0.0, "req-1"), Shell(call({"model": "tiny-chat", "input": "x"})))
        await translator.start(200, b"text/event-stream")
        for data in chunks[:-1]:
            await translator.chunk(data)
        await translator.end(chunks[-1])

    asyncio.run(main())
    text = b"".join(message.get("body", b"") for message in sent).decode()
    events = []
    for block in text.strip().split("\n\n"):
        kind, data = block.split("\n")
        events.append(json.loads(data[6:]))
        assert kind == f"event: {events[-1]['type']}"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    return events


def test_a_stream_of_text_then_a_call_becomes_responses_events():
    head = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = [delta(content=""), delta(content="Let"), delta(content=" me") + delta(tool_calls=[head]),
              delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]),
              delta(finish="tool_calls")[:30], delta(finish="tool_calls")[30:],
              sse({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}) + b"data: [DONE]\n\n"]
    events = run_stream(chunks)
    assert [event["type"] for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert events[6]["text"] == "Let me" and events[11]["arguments"] == '{"city": "Paris"}'
    assert events[9]["item"]["call_id"] == "call_1" and events[9]["output_index"] == 1
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["usage"]["total_tokens"] == 13 and final["status"] == "completed"


def test_a_worker_error_mid_stream_is_an_error_event():
    error = {"error": {"message": "Worker failed mid-stream", "type": "upstream_error", "code": "bad_gateway"}}
    events = run_stream([delta(content="Hi"), sse(error) + b"data: [DONE]\n\n"])
    assert [event["type"] for event in events][-4:] == ["response.output_text.done", "response.content_part.done",
                                                         "response.output_item.done", "error"]
    assert events[-1]["message"] == "Worker failed mid-stream" and events[-1]["code"] == "bad_gateway"


def test_a_cut_answer_is_incomplete():
    events = run_stream([delta(content="Hello"), delta(finish="length") + b"data: [DONE]\n\n"])
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
