"""A stream that continues on another replica (or on the same one after its restart): what the client
already has, parsed from the bytes it was sent, the request that produces the rest, and the merge of
that second stream into the first. Pure; baremetal.gateway.passthrough sends and receives.

Two ways to continue:
- **continue**: ask only for the rest. vLLM chat: the text so far as a partial assistant message
  (`continue_final_message: true`, `add_generation_prompt: false`); completions: the prompt plus the
  text so far; `max_tokens` (`max_completion_tokens`, `min_tokens`) less what was generated. No token
  is generated twice, and it holds at any temperature.
- **replay**: send the original request again and pass on only what the client does not have yet, checking
  that the replayed start is what it was sent. For streams whose deltas are not the model's raw text (tool
  calls and reasoning parsed by vLLM: the text between `<tool_call>` tags is gone), more than one choice,
  completions with logprobs, echo or a suffix, structured output (a grammar would start from nothing), and
  [[program]] backends (continue_final_message is vLLM's). It needs the same answer again: temperature 0, or a
  seed. A replay that differs ends the stream with an error event: the client never gets an altered answer.
Either way the client's stream keeps its chunk ids and `created`; a continued stream's usage counts the
tokens generated before the fault as completion tokens, not prompt tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

DONE = b"data: [DONE]\n\n"
COMPACT_BYTES = 1024 * 1024     # past this (about 4,000 vLLM events), a record folds its bytes into the parsed state
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
STRUCTURED = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs")
Way = Literal["continue", "replay"]


class ReplayDiverged(Exception):
    """The replayed answer is not the one the client was already sent."""


class EmptyContinuation(Exception):
    """A continuation ended without adding a token to what the client has: the request is replayed and
    checked rather than ending the client's stream short."""


# -- parsing ------------------------------------------------------------------------------------------
def sse_events(data: bytes) -> Iterator[dict | None]:
    """The events of complete SSE bytes: a dict per JSON event, None for `[DONE]`; comments and other
    lines are skipped."""
    for block in data.split(b"\n\n"):
        lines = [line[5:] for line in block.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            continue
        payload = b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines).rstrip(b"\r")
        if payload == b"[DONE]":
            yield None
            continue
        try:
            event = json.loads(payload)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def error_message(event: dict) -> str | None:
    """The message of an error event (vLLM's `{"error": {...}}` or an older `{"object": "error", ...}`)."""
    if isinstance(event.get("error"), dict):
        return str(event["error"].get("message") or event["error"])
    if event.get("object") == "error":
        return str(event.get("message") or "error")
    return None


def encode(event: dict) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


ABORTED = 'the engine aborted it (finish_reason "abort": its engine was stopping)'
EMPTY = "the stream ended with no answer ([DONE] before any choice: its server was stopping)"


def aborted(event: dict) -> bool:
    """vLLM's last event for each request of an engine that stops (SIGTERM to its EngineCore, as a restart
    sends): finish_reason "abort". No end of the answer: it goes on elsewhere, as after an error event."""
    choices = event.get("choices") or ()
    return any(isinstance(choice, dict) and choice.get("finish_reason") == "abort" for choice in choices)


def answered(data: bytes) -> bool:
    """Whether SSE bytes hold an answer's event (with a choice) or an error: `data: [DONE]` alone (vLLM's API
    server, stopping, ends so a request its engine gave no token yet) answered nothing."""
    return any(event is not None and (event.get("choices") or error_message(event) is not None)
               for event in sse_events(data))


def aborted_answer(data: bytes) -> bool:
    """Whether a whole (not streamed) answer is one vLLM aborted (it then has a partial text or none)."""
    if b'"abort"' not in data:
        return False
    try:
        answer = json.loads(data)
    except ValueError:
        return False
    return isinstance(answer, dict) and aborted(answer)


def failure_of(event: dict) -> str | None:
    """Why `event` is not part of an answer: an error event's message, or ABORTED; None for an answer's event."""
    message = error_message(event)
    if message is None and aborted(event):
        return ABORTED
    return message


def split_error(data: bytes) -> tuple[bytes, str | None]:
    """(the events before the first that fails the stream (an error event, an aborted end), why it
    fails) of complete SSE bytes; (data, None) without one."""
    if b'"error"' not in data and b'"abort"' not in data:
        return data, None
    kept = []
    for block in data.split(b"\n\n"):
        if block:
            for event in sse_events(block + b"\n\n"):
                message = failure_of(event) if event is not None else None
                if message is not None:
                    return b"".join(kept), message
            kept.append(block + b"\n\n")
    return data, None


@dataclass
class CallSoFar:
    id: str | None = None
    name: str = ""
    arguments: str = ""


@dataclass
class ChoiceSoFar:
    texts: dict[str, str] = field(default_factory=dict)   # delta field (content, reasoning, ...; `text`) -> text
    calls: dict[int, CallSoFar] = field(default_factory=dict)
    role: bool = False
    finish_reason: str | None = None
    pieces: int = 0            # events that carried text: the tokens generated, on vLLM (one event per token)

    @property
    def plain(self) -> bool:
        """Only content (or completion text) so far: the model's raw output."""
        return not self.calls and set(self.texts) <= {"content", "text"}

    @property
    def text(self) -> str:
        return self.texts.get("content", "") + self.texts.get("text", "")

    def absorb(self, choice: dict) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self.role = self.role or bool(delta.get("role"))
            carried = False
            for key, value in delta.items():
                if key != "role" and isinstance(value, str) and value:
                    self.texts[key] = self.texts.get(key, "") + value
                    carried = True
            for call in delta.get("tool_calls") or ():
                carried = True
                _absorb_call(self.calls.setdefault(call.get("index", 0), CallSoFar()), call)
            self.pieces += carried
        elif isinstance(choice.get("text"), str) and choice["text"]:
            self.texts["text"] = self.texts.get("text", "") + choice["text"]
            self.pieces += 1
        if choice.get("finish_reason") and choice["finish_reason"] != "abort":     # aborted: not an end
            self.finish_reason = choice["finish_reason"]


def _absorb_call(so_far: CallSoFar, call: dict) -> None:
    function = call.get("function") or {}
    so_far.id = so_far.id or call.get("id")
    so_far.name += function.get("name") or ""
    so_far.arguments += function.get("arguments") or ""


@dataclass
class StreamSoFar:
    """What a client has been sent of a stream."""

    id: str | None = None
    created: int | None = None
    choices: dict[int, ChoiceSoFar] = field(default_factory=dict)
    usage: bool = False
    done: bool = False

    def feed(self, data: bytes) -> None:
        for event in sse_events(data):
            if event is None:
                self.done = True
                continue
            self.id = self.id or event.get("id")
            self.created = self.created or event.get("created")
            self.usage = self.usage or (bool(event.get("usage")) and not event.get("choices"))
            for choice in event.get("choices") or ():
                if isinstance(choice, dict):
                    self.choices.setdefault(choice.get("index", 0), ChoiceSoFar()).absorb(choice)

    @property
    def finished(self) -> bool:
        """Every choice has its finish reason."""
        return bool(self.choices) and all(choice.finish_reason for choice in self.choices.values())


class StreamRecord:
    """The bytes of a stream sent to the client, kept as they are and parsed only when needed: the hot
    path appends; past COMPACT_BYTES they are folded into the parsed state, so a long stream does not
    keep them all."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.sent = False
        self.done = False
        self._so_far = StreamSoFar()

    def add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.sent = True
        self.size += len(data)
        if data.endswith(DONE):
            self.done = True
        if self.size > COMPACT_BYTES:
            self.so_far()

    def so_far(self) -> StreamSoFar:
        if self.chunks:
            self._so_far.feed(b"".join(self.chunks))
            self.chunks.clear()
            self.size = 0
        return self._so_far


# -- the request for the rest --------------------------------------------------------------------------
def tools_active(payload: dict) -> bool:
    return bool(payload.get("tools")) and payload.get("tool_choice") != "none"


def _structured(payload: dict) -> bool:
    response_format = payload.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    return kind not in (None, "text") or any(payload.get(key) is not None for key in STRUCTURED)


def way_to_continue(endpoint: str, payload: dict, so_far: StreamSoFar, backend_kind: str) -> Way:
    """Whether the rest can be asked for alone ("continue") or the request must be replayed."""
    choice = so_far.choices.get(0) or ChoiceSoFar()
    if (payload.get("n") or 1) != 1 or set(so_far.choices) - {0} or not choice.plain or _structured(payload):
        return "replay"
    if endpoint == "chat":
        last = (payload.get("messages") or [{}])[-1]
        last = last if isinstance(last, dict) else {}
        own_continue = payload.get("continue_final_message") and not isinstance(last.get("content"), str)
        if backend_kind != "vllm" or tools_active(payload) or payload.get("echo") or own_continue:
            return "replay"
        return "continue"
    if endpoint == "completions":
        prompt = payload.get("prompt")
        single = isinstance(prompt, str) or (isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str))
        if not single or payload.get("echo") or payload.get("logprobs") is not None or payload.get("suffix") \
                or (payload.get("best_of") or 1) != 1:
            return "replay"
        return "continue"
    return "replay"


def continuation(endpoint: str, payload: dict, so_far: StreamSoFar, tokens: int) -> dict | None:
    """The request for the rest of a "continue" stream, given the `tokens` generated so far; None when
    nothing is left to generate (replay then, for the exact finish and usage)."""
    text = (so_far.choices.get(0) or ChoiceSoFar()).text
    body = dict(payload)
    if endpoint == "chat":
        limit_key = "max_completion_tokens" if payload.get("max_completion_tokens") is not None else "max_tokens"
        limit = payload.get(limit_key)
        if text:
            messages = list(payload["messages"])
            if payload.get("continue_final_message"):
                messages[-1] = dict(messages[-1], content=messages[-1]["content"] + text)
            else:
                messages.append({"role": "assistant", "content": text})
            body.update(messages=messages, continue_final_message=True, add_generation_prompt=False)
    else:
        limit_key, limit = "max_tokens", payload.get("max_tokens") or COMPLETIONS_DEFAULT_MAX_TOKENS
        prompt = payload["prompt"]
        body["prompt"] = (prompt if isinstance(prompt, str) else prompt[0]) + text
    if limit is not None:
        if limit - tokens < 1:
            return None
        body[limit_key] = limit - tokens
    if isinstance(payload.get("min_tokens"), int):
        body["min_tokens"] = max(0, payload["min_tokens"] - tokens)
    return body


# -- the merge ------------------------------------------------------------------------------------------
def _beyond(sent: str, before: str, piece: str) -> str:
    """The part of `piece` the client does not have: it has `sent`; the replay had produced `before`."""
    after = before + piece
    if len(after) <= len(sent):
        if not sent.startswith(after):
            raise ReplayDiverged()
        return ""
    if not after.startswith(sent):
        raise ReplayDiverged()
    return after[len(sent):] if len(before) < len(sent) else piece


def _has_news(choice: dict) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        news = any(isinstance(v, str) and v for k, v in delta.items() if k != "role") or bool(delta.get("tool_calls"))
    else:
        news = bool(choice.get("text"))
    return news or bool(choice.get("finish_reason"))


class Merge:
    """Turns the events of the stream that continues an interrupted one into what the client gets next."""

    def __init__(self, way: Way, so_far: StreamSoFar, tokens: int = 0):
        self.way = way
        self.so_far = so_far
        self.tokens = tokens
        self.replayed: dict[int, ChoiceSoFar] = {}
        self.added = False              # a "continue" answer gave the client something new

    def feed(self, data: bytes) -> tuple[bytes, str | None]:
        """(the bytes to send the client for complete SSE `data`, the message of an error event in it).
        Raises ReplayDiverged when a replay differs from what was sent."""
        out = []
        for event in sse_events(data):
            if event is None:
                out.append(DONE)
                continue
            message = failure_of(event)
            if message is not None:
                return b"".join(out), message
            event = self._event(event)
            if event is not None:
                out.append(encode(event))
        return b"".join(out), None

    def _event(self, event: dict) -> dict | None:
        if self.so_far.id:
            event["id"] = self.so_far.id
        if self.so_far.created:
            event["created"] = self.so_far.created
        usage = event.get("usage")
        if isinstance(usage, dict) and self.way == "continue" and self.tokens:
            event["usage"] = usage | {"prompt_tokens": usage.get("prompt_tokens", 0) - self.tokens,
                                      "completion_tokens": usage.get("completion_tokens", 0) + self.tokens}
        choices = event.get("choices")
        if not choices:
            return event if usage else None
        kept = [c for c in (self._choice(c) for c in choices if isinstance(c, dict)) if c is not None]
        if not kept and not usage:
            return None
        event["choices"] = kept
        return event

    def _choice(self, choice: dict) -> dict | None:
        index = choice.get("index", 0)
        have = self.so_far.choices.get(index)
        delta = choice.get("delta")
        if have is None:
            return choice
        if have.finish_reason:
            return None
        if self.way == "continue":
            self.added = self.added or bool(choice.get("text")) or (isinstance(delta, dict) and any(
                isinstance(v, str) and v for k, v in delta.items() if k != "role"))
            if choice.get("finish_reason") and not self.added:
                raise EmptyContinuation()
        if isinstance(delta, dict):
            if have.role:
                delta.pop("role", None)
            if self.way == "replay":
                choice["delta"] = self._trim_delta(delta, have, self.replayed.setdefault(index, ChoiceSoFar()))
        elif self.way == "replay" and isinstance(choice.get("text"), str):
            replayed = self.replayed.setdefault(index, ChoiceSoFar())
            before = replayed.texts.get("text", "")
            replayed.texts["text"] = before + choice["text"]
            choice["text"] = _beyond(have.texts.get("text", ""), before, choice["text"])
        return choice if _has_news(choice) else None

    @staticmethod
    def _trim_delta(delta: dict, have: ChoiceSoFar, replayed: ChoiceSoFar) -> dict:
        out: dict[str, Any] = {}
        for key, value in delta.items():
            if key == "tool_calls" or not isinstance(value, str):
                if key != "tool_calls":
                    out[key] = value
                continue
            before = replayed.texts.get(key, "")
            replayed.texts[key] = before + value
            rest = _beyond(have.texts.get(key, ""), before, value)
            if rest or not value:
                out[key] = rest
        calls = []
        for call in delta.get("tool_calls") or ():
            index = call.get("index", 0)
            got = replayed.calls.setdefault(index, CallSoFar())
            sent = have.calls.get(index)
            before_name, before_arguments = got.name, got.arguments
            _absorb_call(got, call)
            if sent is None:
                calls.append(call)
                continue
            function = call.get("function") or {}
            trimmed = {"index": index}
            name = _beyond(sent.name, before_name, function.get("name") or "")
            arguments = _beyond(sent.arguments, before_arguments, function.get("arguments") or "")
            if name or arguments:
                trimmed["function"] = {k: v for k, v in (("name", name), ("arguments", arguments)) if v}
                calls.append(trimmed)
        if calls:
            out["tool_calls"] = calls
        return out
