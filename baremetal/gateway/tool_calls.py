"""Tool calling for engines that do not do it themselves (FastChat workers): the request's `tools` and
`tool_choice` checked and normalised, and Hermes-style `<tool_call>{json}</tool_call>` blocks in the
model's output turned into OpenAI `tool_calls`.

Pure: no I/O. The stream parser and the whole-text parser are one state machine, so a streamed answer
and a non-streamed one give the same calls and the same content.

Rules (also in the README):
- a block whose JSON is an object with a `name` among the offered functions and `arguments` (or
  `parameters`) that is an object, or a string holding a JSON object, becomes a call; anything else
  (bad JSON, an unknown function) stays in the content as the model wrote it, never an error;
- whitespace that only separates calls is dropped, and content that is only whitespace becomes null;
- a block left open at the end of the output (the model stopped before `</tool_call>`) still counts
  when its JSON is complete;
- with `parallel_tool_calls: false` only the first call is kept.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from baremetal.gateway.errors import bad_request

TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"


@dataclass(frozen=True)
class ToolRequest:
    """What the request asks of tool calling. mode: none | auto | required | named."""

    tools: tuple[dict, ...] = ()
    mode: str = "none"
    forced_name: str | None = None
    parallel: bool = True

    @property
    def names(self) -> frozenset[str]:
        return frozenset(tool["function"]["name"] for tool in self.tools)

    @property
    def active(self) -> bool:
        """Whether tools go into the prompt and the output is parsed for calls."""
        return bool(self.tools) and self.mode != "none"


def tool_request(payload: dict[str, Any]) -> ToolRequest:
    """The request's tools, tool_choice and parallel_tool_calls, checked; a 400 names a bad field."""
    tools = payload.get("tools") or []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise bad_request(f"tools[{index}] must be {{\"type\": \"function\", \"function\": {{...}}}}.",
                              param=f"tools[{index}]")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise bad_request(f"tools[{index}].function.name must be a non-empty string.",
                              param=f"tools[{index}].function.name")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise bad_request(f"tools[{index}].function.parameters must be an object (a JSON schema).",
                              param=f"tools[{index}].function.parameters")
    normalised = tuple({"type": "function", "function": tool["function"]} for tool in tools)
    parallel = payload.get("parallel_tool_calls")
    mode, forced = _tool_choice(payload.get("tool_choice"), normalised)
    return ToolRequest(normalised, mode, forced, True if parallel is None else bool(parallel))


def _tool_choice(choice: Any, tools: tuple[dict, ...]) -> tuple[str, str | None]:
    if choice is None:
        return ("auto" if tools else "none"), None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise bad_request(f"tool_choice must be 'none', 'auto', 'required' or a named function, "
                              f"not {choice!r}.", param="tool_choice")
        if choice != "none" and not tools:
            raise bad_request(f"tool_choice {choice!r} needs 'tools'.", param="tool_choice")
        return choice, None
    function = choice.get("function") if choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise bad_request("tool_choice must be {\"type\": \"function\", \"function\": {\"name\": ...}}.",
                          param="tool_choice")
    if name not in {tool["function"]["name"] for tool in tools}:
        raise bad_request(f"tool_choice names the function {name!r}, which is not in 'tools'.",
                          param="tool_choice")
    return "named", name


def new_call_id() -> str:
    """An id in OpenAI's shape (`call_` and 24 characters)."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str              # a JSON object, as a string (what OpenAI sends)

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Content:
    """Text for the client, as it comes."""

    text: str


@dataclass(frozen=True)
class CompletedCall:
    """A complete tool call; `index` is its position among the calls of this answer."""

    index: int
    call: ToolCall


def parse_call(inner: str, names: frozenset[str]) -> tuple[str, str] | None:
    """(name, arguments as a JSON string) from one block's text, or None when it is not a usable call."""
    try:
        value = json.loads(inner.strip())
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or value["name"] not in names:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return value["name"], json.dumps(arguments, ensure_ascii=False)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a start of `tag` (held back until the next delta)."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


class StreamParser:
    """Feed the model's output as it grows (`feed(delta)`), then `finish()`; both return events."""

    def __init__(self, names: frozenset[str], parallel: bool = True, new_id: Callable[[], str] = new_call_id):
        self.names = names
        self.parallel = parallel
        self.new_id = new_id
        self.calls = 0
        self._buffer = ""
        self._inside = False
        self._pending_space = ""    # whitespace held until we know whether a call follows
        self._after_call = False

    def feed(self, delta: str) -> list[Content | CompletedCall]:
        self._buffer += delta
        events: list[Content | CompletedCall] = []
        while True:
            if self._inside:
                end = self._buffer.find(TOOL_CLOSE)
                if end < 0:
                    return events
                inner, self._buffer = self._buffer[:end], self._buffer[end + len(TOOL_CLOSE):]
                self._inside = False
                events += self._block(inner, closed=True)
                continue
            start = self._buffer.find(TOOL_OPEN)
            if start < 0:
                keep = _partial_suffix(self._buffer, TOOL_OPEN)
                text, self._buffer = self._buffer[:len(self._buffer) - keep], self._buffer[len(self._buffer) - keep:]
                return events + self._content(text)
            events += self._content(self._buffer[:start])
            self._buffer = self._buffer[start + len(TOOL_OPEN):]
            self._inside = True

    def finish(self) -> list[Content | CompletedCall]:
        """Flush what is held back: an open block (a call if its JSON is complete) or pending text."""
        events = self._block(self._buffer, closed=False) if self._inside else self._content(self._buffer)
        self._buffer, self._inside = "", False
        if self._pending_space and not self.calls:
            events.append(Content(self._pending_space))
        self._pending_space = ""
        return events

    def _content(self, text: str) -> list[Content | CompletedCall]:
        if self._after_call:
            text = text.lstrip()
            if not text:
                return []
            self._after_call = False
        body = text.rstrip()
        if not body:
            self._pending_space += text
            return []
        out = self._pending_space + text[:len(body)]
        self._pending_space = text[len(body):]
        return [Content(out)]

    def _block(self, inner: str, closed: bool) -> list[Content | CompletedCall]:
        parsed = parse_call(inner, self.names)
        if parsed is None:
            raw = TOOL_OPEN + inner + (TOOL_CLOSE if closed else "")
            out, self._pending_space, self._after_call = self._pending_space + raw, "", False
            return [Content(out)]
        self._pending_space, self._after_call = "", True
        if self.calls and not self.parallel:
            return []
        self.calls += 1
        return [CompletedCall(self.calls - 1, ToolCall(self.new_id(), parsed[0], parsed[1]))]


@dataclass(frozen=True)
class ParsedOutput:
    content: str | None
    tool_calls: tuple[ToolCall, ...]


def parse_output(text: str, names: frozenset[str], parallel: bool = True,
                 new_id: Callable[[], str] = new_call_id) -> ParsedOutput:
    """A whole answer: its content (None when only calls and whitespace) and its tool calls."""
    parser = StreamParser(names, parallel, new_id)
    events = parser.feed(text) + parser.finish()
    content = "".join(event.text for event in events if isinstance(event, Content))
    calls = tuple(event.call for event in events if isinstance(event, CompletedCall))
    return ParsedOutput(content if content.strip() or not calls else None, calls)
