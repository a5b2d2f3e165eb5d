"""Request bodies: JSON and field types, each refusal a 400 that names the field."""

from __future__ import annotations

import pytest

from baremetal.gateway.errors import GatewayError
from baremetal.gateway.validation import MAX_BODY_BYTES, check_fields, parse_body

BODIES = {
    "empty": (b"", "empty"),
    "not JSON": (b"{model", "not valid JSON"),
    "an array": (b"[1]", "must be a JSON object, not an array"),
    "bad UTF-8": (b'{"model": "\xff"}', "not valid JSON"),
    "too large": (b" " * (MAX_BODY_BYTES + 1), "too large", 413),
    "nested too deep": (b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "too deeply", 400),
}


@pytest.mark.parametrize("body, words, status", [(*case, 400)[:3] for case in BODIES.values()], ids=BODIES.keys())
def test_bad_bodies(body, words, status):
    with pytest.raises(GatewayError) as caught:
        parse_body(body)
    assert caught.value.status == status and words in caught.value.message


def test_json_nested_as_deep_as_a_real_schema_parses():
    nested: dict = {"type": "string"}
    for _ in range(60):
        nested = {"type": "object", "properties": {"x": nested}}
    import json

    body = json.dumps({"model": "m", "messages": [], "tools": [{"function": {"parameters": nested}}]}).encode()
    assert parse_body(body)["model"] == "m"


FIELDS = {
    "chat ok": ("chat", {"model": "m", "messages": [], "temperature": 0, "stream": True, "stop": ["x"]}, None),
    "model missing": ("chat", {"messages": []}, "model"),
    "model empty": ("chat", {"model": "", "messages": []}, "model"),
    "model a number": ("embeddings", {"model": 1, "input": "x"}, "model"),
    "messages missing": ("chat", {"model": "m"}, "messages"),
    "stream a string": ("chat", {"model": "m", "messages": [], "stream": "yes"}, "stream"),
    "max_tokens a float": ("chat", {"model": "m", "messages": [], "max_tokens": 1.5}, "max_tokens"),
    "max_tokens a boolean": ("completions", {"model": "m", "prompt": "p", "max_tokens": True}, "max_tokens"),
    "temperature a string": ("completions", {"model": "m", "prompt": "p", "temperature": "hot"}, "temperature"),
    "stop a number": ("chat", {"model": "m", "messages": [], "stop": 3}, "stop"),
    "tools an object": ("chat", {"model": "m", "messages": [], "tools": {}}, "tools"),
    "input missing": ("embeddings", {"model": "m"}, "input"),
    "rerank query a list": ("rerank", {"model": "m", "query": ["q"]}, "query"),
    "unknown fields pass": ("score", {"model": "m", "text_1": "a", "guided_json": {}}, None),
    "null is fine for optional": ("chat", {"model": "m", "messages": [], "max_tokens": None, "tools": None}, None),
}


@pytest.mark.parametrize("endpoint, payload, param", FIELDS.values(), ids=FIELDS.keys())
def test_check_fields(endpoint, payload, param):
    if param is None:
        assert check_fields(endpoint, payload) == "m"
        return
    with pytest.raises(GatewayError) as caught:
        check_fields(endpoint, payload)
    assert caught.value.status == 400 and caught.value.param == param and f"'{param}'" in caught.value.message
