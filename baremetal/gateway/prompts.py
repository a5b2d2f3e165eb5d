"""The prompt for a chat request to a FastChat worker, which only takes text.

Order of preference (also in the README):
1. the model's own chat template, when it renders tools itself in the Hermes/Qwen style (`<tools>` in the
   system turn, `<tool_call>` answers): messages, tool calls and tool results go to it natively, as vLLM
   would pass them;
2. otherwise the fallback: the model's chat template without tools (or the worker's FastChat
   conversation template when the folder has none), with the tool definitions and the Hermes
   instructions appended to the system message, assistant tool calls written as `<tool_call>` blocks
   and tool results sent as a user turn of `<tool_response>` blocks.
`tool_choice: "required"` and a named function are enforced by starting the answer for the model
(`<tool_call>` and, for a named function, its name): a FastChat worker has no constrained decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from baremetal.gateway.chat_template import TemplateRenderer
from baremetal.gateway.conversation import Conversation
from baremetal.gateway.errors import bad_request
from baremetal.gateway.tool_calls import TOOL_CLOSE, TOOL_OPEN, ToolRequest

ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class Prompt:
    text: str                        # the whole prompt, prefill included
    prefill: str                     # the start of the answer written for the model (parse prefill + output)
    stop: tuple[str, ...]
    stop_token_ids: tuple[int, ...]


def tool_system_prompt(tools: tuple[dict, ...]) -> str:
    """The Hermes tool instructions (the wording Qwen2.5's template uses, so models trained on it follow)."""
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            f"<tools>\n{listed}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within "
            f"{TOOL_OPEN}{TOOL_CLOSE} XML tags:\n{TOOL_OPEN}\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n' + TOOL_CLOSE)


def normalise_messages(messages: list[Any]) -> list[dict]:
    """Checked messages with text content; assistant `tool_calls` keep arguments as objects where they parse."""
    if not messages:
        raise bad_request("'messages' must hold at least one message.", param="messages")
    out = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object.", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}, not {role!r}.", param=f"{where}.role")
        item: dict[str, Any] = {"role": "system" if role == "developer" else role,
                                "content": _text(message.get("content"), where, required=role != "assistant")}
        if role == "assistant" and message.get("tool_calls") is not None:
            item["tool_calls"] = _tool_calls(message["tool_calls"], where)
        if role == "tool":
            item["tool_call_id"] = str(message.get("tool_call_id") or "")
        if isinstance(message.get("name"), str):
            item["name"] = message["name"]
        out.append(item)
    return out


def _text(content: Any, where: str, required: bool) -> str:
    if content is None:
        if required:
            raise bad_request(f"{where}.content is required.", param=f"{where}.content")
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"{where}.content[{index}]: this model takes text only (parts of type 'text').",
                                  param=f"{where}.content[{index}]")
            texts.append(part["text"])
        return "\n".join(texts)
    raise bad_request(f"{where}.content must be a string or an array of text parts.", param=f"{where}.content")


def _tool_calls(calls: Any, where: str) -> list[dict]:
    if not isinstance(calls, list):
        raise bad_request(f"{where}.tool_calls must be an array.", param=f"{where}.tool_calls")
    out = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"{where}.tool_calls[{index}] must hold function.name and function.arguments.",
                              param=f"{where}.tool_calls[{index}]")
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                pass  # kept as written: the template prints it as a string
        out.append({"id": str(call.get("id") or ""), "type": "function",
                    "function": {"name": function["name"], "arguments": arguments}})
    return out


def _as_text_turns(messages: list[dict], tools: ToolRequest, default_system: str = "") -> list[dict]:
    """The fallback: one system message first (with the tool instructions), tool traffic as plain text.
    `default_system` is the template's own system message, kept when the client sends none."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"]) or default_system
    if tools.active:
        system = f"{system}\n\n{tool_system_prompt(tools.tools)}" if system else tool_system_prompt(tools.tools)
    out = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if message["role"] == "system":
            continue
        if message["role"] == "assistant" and message.get("tool_calls"):
            blocks = [f"{TOOL_OPEN}\n" + json.dumps({"name": call["function"]["name"],
                                                     "arguments": call["function"]["arguments"]},
                                                    ensure_ascii=False) + f"\n{TOOL_CLOSE}"
                      for call in message["tool_calls"]]
            text = "\n".join(([message["content"]] if message["content"] else []) + blocks)
            out.append({"role": "assistant", "content": text})
        elif message["role"] == "tool":
            block = f"<tool_response>\n{message['content']}\n</tool_response>"
            if out and out[-1].get("tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "tool_results": True})
        else:
            out.append({"role": message["role"], "content": message["content"]})
    return [{"role": m["role"], "content": m["content"]} for m in out]


def _prefill(tools: ToolRequest) -> str:
    if not tools.active or tools.mode not in ("required", "named"):
        return ""
    if tools.mode == "required":
        return f"{TOOL_OPEN}\n"
    # No trailing space: BPE tokenizers merge it with what follows (` {`), so a prompt ending in a space
    # would hand the model a token sequence it never saw in training.
    return f"{TOOL_OPEN}\n" + '{"name": ' + json.dumps(tools.forced_name, ensure_ascii=False) + ', "arguments":'


def _conversation_prompt(conversation: Conversation, messages: list[dict]) -> str:
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    turns: list[tuple[int, str | None]] = [(0 if m["role"] == "user" else 1, m["content"])
                                           for m in messages if m["role"] != "system"]
    return conversation.with_turns(system, turns + [(1, None)]).prompt()


def build_prompt(messages: list[dict], tools: ToolRequest, renderer: TemplateRenderer | None,
                 conversation: Conversation | None, user_stop: tuple[str, ...] = (),
                 template_kwargs: Mapping[str, Any] | None = None) -> Prompt:
    """The prompt for normalised `messages`, with the model's template (`renderer`) or the worker's."""
    prefill = _prefill(tools)
    stop = list(user_stop)
    if tools.active and not tools.parallel:
        stop.append(TOOL_CLOSE)      # one call is all the client takes: stop the model after it
    if renderer is not None:
        if renderer.template.hermes_tools:
            text = renderer.render(messages, list(tools.tools) if tools.active else None, template_kwargs)
        else:
            text = renderer.render(_as_text_turns(messages, tools), None, template_kwargs)
        return Prompt(text + prefill, prefill, tuple(dict.fromkeys(stop)), renderer.template.stop_token_ids)
    if conversation is None:
        raise bad_request("This model has neither a chat template nor a conversation template.")
    text = _conversation_prompt(conversation, _as_text_turns(messages, tools, conversation.system_message))
    conv_stop = conversation.stop_str
    stop += [conv_stop] if isinstance(conv_stop, str) else list(conv_stop or ())
    return Prompt(text + prefill, prefill, tuple(dict.fromkeys(s for s in stop if s)), conversation.stop_token_ids)
