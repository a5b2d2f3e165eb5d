"""Serving the Responses API on the gateway's chat path (baremetal.gateway.responses has the objects):
whole answers are rewritten once complete; streams are translated event by event as the chat chunks
come, in the order OpenAI sends them:

    response.created, response.in_progress,
    per text:  response.output_item.added (message), response.content_part.added,
               response.output_text.delta ..., response.output_text.done, response.content_part.done,
               response.output_item.done
    per call:  response.output_item.added (function_call), response.function_call_arguments.delta ...,
               response.function_call_arguments.done, response.output_item.done
    response.completed (or response.incomplete when max_output_tokens cut it), with the usage;
    an error from the worker mid-stream: an `error` event.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

from baremetal.gateway.exchange import JSON, ClientRequest, Responder
from baremetal.gateway.responses import Shell, _id, _usage, chat_payload, function_item, message_item, whole_response

if TYPE_CHECKING:
    from baremetal.gateway.app import Gateway
    from baremetal.gateway.exchange import Handler
    from baremetal.gateway.failover import Failover
    from baremetal.gateway.routing import Backend

SSE = b"text/event-stream"


async def serve(gateway: "Gateway", call: ClientRequest, backend: "Backend", respond: Responder,
                chat: "Handler", failover: "Failover | None" = None) -> None:
    """Answer a Responses request through `chat`, the backend's chat path (`failover` moves its stream)."""
    payload = chat_payload(call.payload)
    chat_call = replace(call, endpoint="chat", path="/v1/chat/completions", payload=payload,
                        body=json.dumps(payload, ensure_ascii=False).encode())
    shell = Shell(call)
    if payload.get("stream"):
        await chat(gateway, chat_call, backend, StreamTranslator(respond, shell), failover)
        return
    capture = WholeCapture()
    await chat(gateway, chat_call, backend, capture, failover)
    if capture.status == 200:
        body = json.dumps(whole_response(shell, json.loads(capture.data)), ensure_ascii=False).encode()
        await respond.whole(200, JSON, body)
    else:
        await respond.whole(capture.status, capture.content_type, capture.data)


class WholeCapture:
    """Stands in for the Responder while the chat path answers a whole request."""

    def __init__(self) -> None:
        self.status, self.content_type, self.data = 0, JSON, b""

    @property
    def started(self) -> bool:
        return False

    async def whole(self, status: int, content_type: bytes, data: bytes, headers=()) -> None:
        self.status, self.content_type, self.data = status, content_type, data


class StreamTranslator:
    """Stands in for the Responder while the chat path streams: chat chunks in, Responses events out."""

    def __init__(self, respond: Responder, shell: Shell):
        self.respond = respond
        self.shell = shell
        self.sequence = 0
        self.output: list[dict] = []          # finished items
        self.text: dict | None = None         # the open message item: id, index, text
        self.call: dict | None = None         # the open function call: id, index, call_id, name, arguments
        self.finish: str | None = None
        self.usage: dict | None = None
        self.failed = False
        self.opened = False                   # response.created sent
        self._buffer = b""

    @property
    def started(self) -> bool:
        return self.opened

    @property
    def status(self) -> int:
        return self.respond.status

    async def start(self, status: int, content_type: bytes, headers=()) -> None:
        self.opened = True
        if not self.respond.started:        # else held: the stream started with keep-alive comments
            await self.respond.start(status, SSE, ((b"cache-control", b"no-cache"),))
        opening = self.shell.response([], "in_progress", None)
        await self.respond.chunk(self._event("response.created", response=opening)
                                 + self._event("response.in_progress", response=opening))

    async def chunk(self, data: bytes) -> None:
        events = self._translate(data)
        if events:
            await self.respond.chunk(events)

    async def end(self, data: bytes = b"") -> None:
        await self.respond.end(self._translate(data) + self._close())

    async def whole(self, status: int, content_type: bytes, data: bytes, headers=()) -> None:
        await self.respond.whole(status, content_type, data, headers)      # an error before the stream began

    # -- translation ---------------------------------------------------------------------------
    def _event(self, kind: str, **fields) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

    def _translate(self, data: bytes) -> bytes:
        self._buffer += data
        *events, self._buffer = self._buffer.split(b"\n\n")
        out = b""
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data: ") and line[6:].strip() != b"[DONE]":
                    out += self._one(json.loads(line[6:]))
        return out

    def _one(self, chunk: dict) -> bytes:
        if "error" in chunk:
            self.failed = True
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            return self._close_items() + self._event("error", code=error.get("code"), message=error.get("message"),
                                                     param=error.get("param"))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = b""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or []:
                out += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def _text_delta(self, text: str) -> bytes:
        out = b""
        if self.call is not None:
            out += self._close_call()
        if self.text is None:
            self.text = {"id": _id("msg"), "index": len(self.output), "text": ""}
            out += self._event("response.output_item.added", output_index=self.text["index"],
                               item=message_item("", self.text["id"], "in_progress"))
            out += self._event("response.content_part.added", item_id=self.text["id"], output_index=self.text["index"],
                               content_index=0, part={"type": "output_text", "text": "", "annotations": []})
        self.text["text"] += text
        return out + self._event("response.output_text.delta", item_id=self.text["id"],
                                 output_index=self.text["index"], content_index=0, delta=text, logprobs=[])

    def _call_delta(self, call: dict) -> bytes:
        out = b""
        function = call.get("function") or {}
        if call.get("id"):
            out += self._close_items()
            self.call = {"id": _id("fc"), "index": len(self.output), "call_id": call["id"],
                         "name": function.get("name", ""), "arguments": ""}
            out += self._event("response.output_item.added", output_index=self.call["index"],
                               item=function_item(self.call["call_id"], self.call["name"], "", self.call["id"],
                                                  "in_progress"))
        if self.call is not None and function.get("arguments"):
            self.call["arguments"] += function["arguments"]
            out += self._event("response.function_call_arguments.delta", item_id=self.call["id"],
                               output_index=self.call["index"], delta=function["arguments"])
        return out

    def _close_text(self) -> bytes:
        text, self.text = self.text, None
        item = message_item(text["text"], text["id"])
        self.output.append(item)
        common = {"item_id": text["id"], "output_index": text["index"], "content_index": 0}
        return (self._event("response.output_text.done", **common, text=text["text"], logprobs=[])
                + self._event("response.content_part.done", **common, part=item["content"][0])
                + self._event("response.output_item.done", output_index=text["index"], item=item))

    def _close_call(self) -> bytes:
        call, self.call = self.call, None
        item = function_item(call["call_id"], call["name"], call["arguments"], call["id"])
        self.output.append(item)
        return (self._event("response.function_call_arguments.done", item_id=call["id"], output_index=call["index"],
                            arguments=call["arguments"], name=call["name"])
                + self._event("response.output_item.done", output_index=call["index"], item=item))

    def _close_items(self) -> bytes:
        return (self._close_text() if self.text is not None else b"") + \
            (self._close_call() if self.call is not None else b"")

    def _close(self) -> bytes:
        if self.failed:
            return b""
        out = self._close_items()
        status = "incomplete" if self.finish == "length" else "completed"
        return out + self._event(f"response.{status}",
                                 response=self.shell.response(self.output, status, _usage(self.usage)))
