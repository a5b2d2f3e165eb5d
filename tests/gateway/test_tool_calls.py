"""Tool-call parsing and tool_choice handling: pure, table-tested. A streamed answer, cut anywhere, must
give the same calls and content as the whole text."""

from __future__ import annotations

import itertools
import json

import pytest

from baremetal.gateway.errors import GatewayError
from baremetal.gateway.tool_calls import CompletedCall, Content, StreamParser, parse_output, tool_request

NAMES = frozenset({"get_weather", "get_time"})
WEATHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TIME = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'


def ids():
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


# text -> (content, [(name, arguments)])
CASES = {
    "plain answer": ("It is sunny.", ("It is sunny.", [])),
    "one call": (WEATHER, (None, [("get_weather", {"city": "Paris"})])),
    "two parallel calls": (WEATHER + "\n" + TIME, (None, [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"})])),
    "text then call": ("Let me check.\n" + WEATHER, ("Let me check.", [("get_weather", {"city": "Paris"})])),
    "call then text": (WEATHER + "\nDone.", ("Done.", [("get_weather", {"city": "Paris"})])),
    "arguments as a JSON string": ('<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"UTC\\"}"}</tool_call>',
                                   (None, [("get_time", {"zone": "UTC"})])),
    "parameters instead of arguments": ('<tool_call>{"name": "get_time", "parameters": {"zone": "UTC"}}</tool_call>',
                                        (None, [("get_time", {"zone": "UTC"})])),
    "no arguments": ('<tool_call>{"name": "get_time"}</tool_call>', (None, [("get_time", {})])),
    "unicode arguments": ('<tool_call>{"name": "get_weather", "arguments": {"city": "Zürich"}}</tool_call>',
                          (None, [("get_weather", {"city": "Zürich"})])),
    "malformed JSON stays content": ('<tool_call>{"name": "get_weather", "arguments": {city}}</tool_call>',
                                     ('<tool_call>{"name": "get_weather", "arguments": {city}}</tool_call>', [])),
    "unknown function stays content": ('<tool_call>{"name": "launch", "arguments": {}}</tool_call>',
                                       ('<tool_call>{"name": "launch", "arguments": {}}</tool_call>', [])),
    "arguments not an object": ('<tool_call>{"name": "get_time", "arguments": [1]}</tool_call>',
                                ('<tool_call>{"name": "get_time", "arguments": [1]}</tool_call>', [])),
    "good call kept, bad one as content": (WEATHER + "\n<tool_call>oops</tool_call>",
                                           ("<tool_call>oops</tool_call>", [("get_weather", {"city": "Paris"})])),
    "unclosed but complete call (stopped at </tool_call>)": ('<tool_call>\n{"name": "get_time", "arguments": {}}\n',
                                                             (None, [("get_time", {})])),
    "unclosed and incomplete stays content": ('<tool_call>\n{"name": "get_ti', ('<tool_call>\n{"name": "get_ti', [])),
    "tag-like text that is not a tag": ("a <tool_cal b", ("a <tool_cal b", [])),
    "whitespace-only output": ("  \n", ("  \n", [])),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_parse_output(text, expected):
    parsed = parse_output(text, NAMES, new_id=ids())
    content, calls = expected
    assert parsed.content == content
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == calls
    assert [c.id for c in parsed.tool_calls] == [f"call_{i}" for i in range(len(calls))]


@pytest.mark.parametrize("text", [case[0] for case in CASES.values()], ids=list(CASES))
def test_streaming_matches_whole_text_at_every_split(text):
    """Cut the text at every pair of points: the events add up to the whole-text result."""
    whole = parse_output(text, NAMES, new_id=ids())
    for first, second in itertools.combinations_with_replacement(range(len(text) + 1), 2):
        parser = StreamParser(NAMES, new_id=ids())
        events = parser.feed(text[:first]) + parser.feed(text[first:second]) + parser.feed(text[second:])
        events += parser.finish()
        content = "".join(e.text for e in events if isinstance(e, Content))
        calls = [e.call for e in events if isinstance(e, CompletedCall)]
        assert (content if content.strip() or not calls else None) == whole.content, (first, second)
        assert calls == list(whole.tool_calls)
        assert [e.index for e in events if isinstance(e, CompletedCall)] == list(range(len(calls)))


def test_stream_sends_content_before_the_call_completes():
    parser = StreamParser(NAMES, new_id=ids())
    assert parser.feed("Checking the weather") == [Content("Checking the weather")]
    assert parser.feed(" now.\n<tool_") == [Content(" now.")]
    assert parser.feed('call>{"name": "get_weather", "arguments": {"city": "Oslo"}}') == []
    events = parser.feed("</tool_call>")
    assert len(events) == 1 and events[0].call.name == "get_weather"
    assert parser.finish() == []


def test_only_the_first_call_without_parallel_tool_calls():
    parsed = parse_output(WEATHER + TIME, NAMES, parallel=False, new_id=ids())
    assert [c.name for c in parsed.tool_calls] == ["get_weather"]
    assert parsed.content is None


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]

# payload fields -> (mode, forced name, parallel) or the param a 400 names
REQUESTS = {
    "no tools": ({}, ("none", None, True)),
    "tools, default auto": ({"tools": TOOLS}, ("auto", None, True)),
    "none": ({"tools": TOOLS, "tool_choice": "none"}, ("none", None, True)),
    "required": ({"tools": TOOLS, "tool_choice": "required"}, ("required", None, True)),
    "named": ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
              ("named", "get_weather", True)),
    "parallel off": ({"tools": TOOLS, "parallel_tool_calls": False}, ("auto", None, False)),
    "none without tools is fine": ({"tool_choice": "none"}, ("none", None, True)),
    "required without tools": ({"tool_choice": "required"}, "tool_choice"),
    "unknown choice": ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
    "named function not offered": ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
                                   "tool_choice"),
    "named without a name": ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice"),
    "tool without function": ({"tools": [{"type": "function"}]}, "tools[0]"),
    "tool of another type": ({"tools": [{"type": "retrieval", "function": {"name": "a"}}]}, "tools[0]"),
    "function without a name": ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    "parameters not an object": ({"tools": [{"type": "function", "function": {"name": "a", "parameters": []}}]},
                                 "tools[0].function.parameters"),
}


@pytest.mark.parametrize("payload, expected", REQUESTS.values(), ids=REQUESTS.keys())
def test_tool_request(payload, expected):
    if isinstance(expected, str):
        with pytest.raises(GatewayError) as caught:
            tool_request(payload)
        assert caught.value.status == 400 and caught.value.param == expected
        return
    request = tool_request(payload)
    assert (request.mode, request.forced_name, request.parallel) == expected
