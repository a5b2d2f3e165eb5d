"""OpenAI's Responses API (`POST /v1/responses`) for backends that only have the gateway's chat path
(FastChat workers): the request becomes a chat request (`instructions` the system message, `input`
items the messages, function tools the chat tools), the chat path answers it (prompt, tool calling,
whole or streamed), and its answer is written back as a Response: `message` items with `output_text`,
`function_call` items, usage, and for streams the events the openai SDK and LangChain read
(response.created ... output_text.delta ... function_call_arguments.delta ... response.completed).

What FastChat cannot do is a 400 naming the field: previous_response_id (nothing is stored), non-function
tools, structured `text.format`, `reasoning`, images. vLLM backends serve /v1/responses themselves
(passed through). This module is the pure part (request and Response objects); responses_stream serves
requests with it and writes the streamed events.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from baremetal.gateway.errors import bad_request

if TYPE_CHECKING:
    from baremetal.gateway.exchange import ClientRequest

_TEXT_PARTS = ("input_text", "output_text", "text", "refusal")


def _id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


def _text_of(content: Any, where: str) -> str:
    """The text of a message's content: a string, or parts of type input_text/output_text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"'{where}.content' must be a string or an array of content parts.", param=where)
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS:
            raise bad_request(f"'{where}.content[{index}]' is of type {kind!r}; models on FastChat workers take "
                              "text only (input_text, output_text).", param=f"{where}.content")
        texts.append(str(part.get("text", part.get("refusal", ""))))
    return "".join(texts)


def _messages(payload: dict) -> list[dict]:
    """`instructions` and `input` as chat messages."""
    messages: list[dict] = []
    if payload.get("instructions"):
        messages.append({"role": "system", "content": payload["instructions"]})
    items = payload.get("input")
    if isinstance(items, str):
        return messages + [{"role": "user", "content": items}]
    for index, item in enumerate(items or []):
        where = f"input[{index}]"
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message" and item.get("role") in ("user", "system", "developer", "assistant"):
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _text_of(item.get("content", ""), where)})
        elif kind == "function_call":
            call = {"id": str(item.get("call_id") or item.get("id") or _id("call")), "type": "function",
                    "function": {"name": str(item.get("name", "")), "arguments": str(item.get("arguments", "{}"))}}
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and (last.get("tool_calls") or not last.get("content")):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id", "")),
                             "content": output if isinstance(output, str) else _text_of(output, where)})
        elif kind == "reasoning":
            continue
        else:
            raise bad_request(f"'{where}' is of type {kind!r}; models on FastChat workers take messages, "
                              "function_call and function_call_output items.", param="input")
    if not messages:
        raise bad_request("'input' is required: a string or an array of input items.", param="input")
    return messages


def _tools(payload: dict) -> list[dict]:
    tools = []
    for index, tool in enumerate(payload.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not tool.get("name"):
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise bad_request(f"'tools[{index}]' is of type {kind!r}; models on FastChat workers take function "
                              "tools only.", param="tools")
        tools.append({"type": "function", "function": {key: tool[key] for key in ("name", "description", "parameters")
                                                        if tool.get(key) is not None}})
    return tools


def chat_payload(payload: dict) -> dict:
    """The chat request that answers a Responses request. Pure; raises a 400 for what cannot be done."""
    if payload.get("previous_response_id"):
        raise bad_request("'previous_response_id' needs stored responses, which models on FastChat workers do not "
                          "keep; send the whole conversation in 'input'.", param="previous_response_id")
    if payload.get("background"):
        raise bad_request("'background' is not supported for models on FastChat workers.", param="background")
    text_format = (payload.get("text") or {}).get("format") or {"type": "text"}
    if text_format.get("type") != "text":
        raise bad_request("'text.format' other than text needs constrained decoding, which FastChat workers do "
                          "not have.", param="text.format")
    reasoning = payload.get("reasoning") or {}
    if reasoning.get("effort") or reasoning.get("summary"):
        raise bad_request("'reasoning' is not supported for models on FastChat workers.", param="reasoning")
    chat: dict[str, Any] = {"model": payload["model"], "messages": _messages(payload)}
    tools = _tools(payload)
    if tools:
        chat["tools"] = tools
    choice = payload.get("tool_choice")
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not choice.get("name"):
            raise bad_request("'tool_choice' must be auto, none, required or {\"type\": \"function\", \"name\": ...}.",
                              param="tool_choice")
        choice = {"type": "function", "function": {"name": choice["name"]}}
    for source, target in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                           ("top_p", "top_p"), ("parallel_tool_calls", "parallel_tool_calls"), ("user", "user")):
        if payload.get(source) is not None:
            chat[target] = payload[source]
    if choice is not None:
        chat["tool_choice"] = choice
    if payload.get("stream"):
        chat |= {"stream": True, "stream_options": {"include_usage": True}}
    return chat


def _usage(chat_usage: dict | None) -> dict:
    prompt = int((chat_usage or {}).get("prompt_tokens") or 0)
    completion = int((chat_usage or {}).get("completion_tokens") or 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}


def message_item(text: str, item_id: str, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []}


def function_item(call_id: str, name: str, arguments: str, item_id: str, status: str = "completed") -> dict:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


class Shell:
    """The fields of a Response that echo the request, and its identity."""

    def __init__(self, call: "ClientRequest"):
        payload = call.payload
        self.id = _id("resp")
        self.created_at = int(time.time())
        self.fields = {"instructions": payload.get("instructions"), "max_output_tokens": payload.get("max_output_tokens"),
                       "metadata": payload.get("metadata") or {}, "model": call.model,
                       "parallel_tool_calls": payload.get("parallel_tool_calls", True), "previous_response_id": None,
                       "reasoning": {"effort": None, "summary": None}, "store": False,
                       "temperature": payload.get("temperature", 1.0), "text": {"format": {"type": "text"}},
                       "tool_choice": payload.get("tool_choice", "auto"), "tools": payload.get("tools") or [],
                       "top_p": payload.get("top_p", 1.0), "truncation": "disabled", "user": payload.get("user")}

    def response(self, output: list[dict], status: str, usage: dict | None) -> dict:
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": status,
                "error": None, "incomplete_details": incomplete, "output": output, "usage": usage, **self.fields}


def whole_response(shell: Shell, completion: dict) -> dict:
    """A chat completion written as a Response. Pure."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output = []
    if message.get("content"):
        output.append(message_item(message["content"], _id("msg")))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(function_item(call.get("id") or _id("call"), function.get("name", ""),
                                    function.get("arguments", ""), _id("fc")))
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    return shell.response(output, status, _usage(completion.get("usage")))
