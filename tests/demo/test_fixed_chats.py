"""The chat template's contract for anyone who renders prompts without transformers (baremetal's gateway
in front of FastChat workers): jinja2 with transformers' settings gives the prompts tiny-chat was
trained on, byte for byte."""

from __future__ import annotations

import json

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from baremetal.demo import fixed_chats as chats


def transformers_like_render(messages: list[dict], tools: list[dict] | None) -> str:
    """transformers' settings: trim/lstrip blocks, and tojson = json.dumps keeping key order and Unicode."""
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    template = environment.from_string(chats.CHAT_TEMPLATE)
    return template.render(messages=messages, tools=tools, add_generation_prompt=True)


@pytest.mark.parametrize("name", list(chats.CONVERSATIONS))
def test_plain_jinja2_renders_the_trained_prompts(demo_models, name):
    saved = json.loads((demo_models / chats.TINY_CHAT / "fixed_prompts.json").read_text(encoding="utf-8"))
    messages, tools, _reply = chats.CONVERSATIONS[name]
    assert transformers_like_render(messages, tools) == saved["conversations"][name]["prompt"]


def test_tools_render_the_same_bare_or_wrapped_and_with_extra_keys():
    """Clients and servers pass tools differently; the template normalises them."""
    messages = chats.CONVERSATIONS["tool_call"][0]
    wrapped = transformers_like_render(messages, chats.TOOLS)
    bare = transformers_like_render(messages, [chats.WEATHER_TOOL["function"]])
    extra = transformers_like_render(messages, [{"type": "function",
                                                 "function": {**chats.WEATHER_TOOL["function"], "strict": False}}])
    assert wrapped == bare == extra
    assert '"name": "get_weather"' in wrapped and "<tools>" in wrapped

