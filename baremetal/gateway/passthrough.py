"""vLLM servers and [[program]] backends: the request goes through unchanged (same path, same bytes) and
the answer comes back as the backend sent it. Streams are forwarded event by event as they arrive,
never decoded or re-encoded (bytes are cut only at event boundaries, so a client never holds half an
event); other answers are read whole first, so that a backend failing half-way costs a re-send, not a
truncated body.

A chat or completions stream that breaks (the connection drops, the backend sends an error event, or
the gateway gives up on a stuck backend) goes on elsewhere: the bytes already sent are parsed (only
then) into what the client has, and baremetal.gateway.migration builds the request for the rest and
merges its events in. Streams of the other endpoints (Responses API, Anthropic messages) are relayed
as they arrive and end with an error event when their backend fails mid-stream.

The request goes with the headers intake chose (X-Request-Id, trace context, User-Agent).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from baremetal.gateway import migration
from baremetal.gateway.errors import bad_gateway
from baremetal.gateway.exchange import ClientRequest, Responder
from baremetal.gateway.upstream import BackendFailed, BackendUnreachable
from baremetal.gateway.witness import received

if TYPE_CHECKING:
    from baremetal.gateway.app import Gateway
    from baremetal.gateway.failover import Failover
    from baremetal.gateway.routing import Backend

RESEND_STATUSES = frozenset({500, 502, 503, 504})
SSE = b"text/event-stream"
EVENT_END = b"\n\n"
MOVABLE = frozenset({"chat", "completions"})     # streams migration knows how to continue


def stream_error_event(message: str) -> bytes:
    """An SSE event in the shape vLLM uses for errors mid-stream (the openai SDK raises on it), then DONE."""
    error = {"error": {"message": message, "type": "upstream_error", "param": None, "code": "bad_gateway"}}
    return f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()


async def serve(gateway: "Gateway", call: ClientRequest, backend: "Backend", respond: Responder,
                failover: "Failover | None" = None) -> None:
    """Forward `call` to `backend` and relay its answer; a stream that breaks goes on elsewhere."""
    record = migration.StreamRecord() if call.endpoint in MOVABLE else None
    body, merge, moved, replay = call.body, None, False, False
    while True:
        try:
            if moved:
                body, merge = await _rest(gateway, call, backend, record, failover, replay)
                moved = False
            await _forward(gateway, backend, call, body, respond, record, merge, failover)
            return
        except (BackendFailed, BackendUnreachable) as error:
            failure: Exception = error
        except asyncio.CancelledError:
            failure = failover.flight.abandoned() if failover else None
            if failure is None:
                raise
        except migration.ReplayDiverged:
            raise failover.failed(diverged(backend)) from None
        except migration.EmptyContinuation:
            failover.note(f"{backend.name} added nothing to the partial answer: replaying it there")
            moved = replay = True
            continue
        if failover is None or record is None or not record.sent:
            raise failure
        backend, moved = await failover.move(failure), True


async def _rest(gateway: "Gateway", call: ClientRequest, backend: "Backend", record: migration.StreamRecord,
                failover: "Failover", replay: bool = False) -> tuple[bytes, migration.Merge]:
    """The request for the rest of a stream the client has part of, and the merge of its answer."""
    so_far = record.so_far()
    way = "replay" if replay else migration.way_to_continue(call.endpoint, call.payload, so_far, backend.kind)
    payload = None
    if way == "continue":
        choice = so_far.choices.get(0) or migration.ChoiceSoFar()
        tokens = await _tokens(gateway, call, backend, choice)
        payload = migration.continuation(call.endpoint, call.payload, so_far, tokens)
        if payload is not None and call.endpoint == "chat" and not await _template_continues(gateway, call, backend,
                                                                                             payload, choice.text):
            failover.note(f"{backend.name}'s chat template closes a partial answer instead of continuing it")
            payload = None
    if payload is None:
        way, payload, tokens = "replay", call.payload, 0
    sent = sum(len(text) for choice in so_far.choices.values() for text in choice.texts.values()) + sum(
        len(call.name) + len(call.arguments) for choice in so_far.choices.values() for call in choice.calls.values())
    failover.note(f"continues on {backend.name} by {way} after {sent} characters")
    return json.dumps(payload, ensure_ascii=False).encode(), migration.Merge(way, so_far, tokens)


async def _template_continues(gateway: "Gateway", call: ClientRequest, backend: "Backend", payload: dict,
                              text: str) -> bool:
    """Whether the backend's chat template leaves the partial assistant message open (the prompt it renders
    ends with the text so far), as continue_final_message needs; after a template that closes the message
    anyway the model starts a new turn (tiny-chat answers again from its first word), so those streams are
    replayed. One /tokenize and one /detokenize."""
    tail = text.rstrip()[-12:]
    if not tail:
        return True
    try:
        rendered = await gateway.upstream.post_json(backend.url + "/tokenize", {
            "model": call.model, "messages": payload["messages"], "add_generation_prompt": False,
            "continue_final_message": True, "add_special_tokens": False}, timeout_s=10.0)
        tokens = rendered.get("tokens") if isinstance(rendered, dict) else None
        if not isinstance(tokens, list) or not tokens:
            return False
        prompt = await gateway.upstream.post_json(backend.url + "/detokenize", {
            "model": call.model, "tokens": tokens[-64:]}, timeout_s=10.0)
    except (BackendFailed, BackendUnreachable):
        return False
    end = prompt.get("prompt") if isinstance(prompt, dict) else None
    return isinstance(end, str) and end.rstrip().endswith(tail)


async def _tokens(gateway: "Gateway", call: ClientRequest, backend: "Backend", choice: migration.ChoiceSoFar) -> int:
    """The tokens in the text generated so far: vLLM's tokenizer counts them; else one per event."""
    if backend.kind == "vllm" and choice.text:
        try:
            answer = await gateway.upstream.post_json(backend.url + "/tokenize", {
                "model": call.model, "prompt": choice.text, "add_special_tokens": False}, timeout_s=10.0)
            if isinstance(answer, dict) and isinstance(answer.get("count"), int):
                return answer["count"]
        except (BackendFailed, BackendUnreachable):
            pass
    return choice.pieces


async def _forward(gateway: "Gateway", backend: "Backend", call: ClientRequest, body: bytes, respond: Responder,
                   record: migration.StreamRecord | None, merge: migration.Merge | None,
                   failover: "Failover | None") -> None:
    """One backend's answer (all of it, or the rest of a stream) relayed to the client."""
    upstream = gateway.upstream
    answered = False
    try:
        async with upstream.post(backend.url + call.path, body, call.headers) as response:
            answered = True
            content_type = response.headers.get("Content-Type", "application/json").encode("latin-1")
            if content_type.startswith(SSE):
                if record is None:
                    await _pass(response, content_type, respond)
                else:
                    await _relay(response, content_type, respond, record, merge)
                return
            data = await response.read()
            received()
            if response.status in RESEND_STATUSES and failover is not None and failover.can_resend():
                raise BackendFailed(f"answered {response.status}: {data[:200].decode('utf-8', 'replace')}")
            if response.status == 200 and failover is not None and failover.can_resend() \
                    and migration.aborted_answer(data):
                raise BackendFailed(migration.ABORTED)
            await _answer(response.status, content_type, data, respond)
    except upstream.errors as error:
        if answered:            # the backend had the request: a failure (counted against api.migration_limit)
            raise BackendFailed(str(upstream.classify(error))) from None
        raise upstream.classify(error) from None    # refused: the request, or the rest of a stream, goes on


async def _answer(status: int, content_type: bytes, data: bytes, respond: Responder) -> None:
    """A whole answer; to a stream the client already has the start of (held), as an error event."""
    if not respond.started:
        await respond.whole(status, content_type, data)
        return
    try:
        error = json.loads(data)
        event = migration.encode(error if isinstance(error, dict) else {"error": {"message": str(error)}})
    except ValueError:
        event = migration.encode({"error": {"message": data[:500].decode("utf-8", "replace"),
                                            "type": "upstream_error", "param": None, "code": status}})
    await respond.end(event + migration.DONE)


async def _relay(response, content_type: bytes, respond: Responder, record: migration.StreamRecord,
                 merge: migration.Merge | None) -> None:
    """Pass the stream's events on as they come; raise BackendFailed when it breaks before its end."""
    read = response.content.readany
    pending = b""
    while True:
        data = await read()
        if not data:
            break
        received()
        if pending:
            data, pending = pending + data, b""
        if not data.endswith(EVENT_END):
            at, crlf = data.rfind(EVENT_END), data.rfind(b"\r\n\r\n")
            cut = max(at + 2 if at >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
            data, pending = data[:cut], data[cut:]
            if not data:
                continue
        if not record.sent and data.endswith(migration.DONE) and not migration.answered(data):
            raise BackendFailed(migration.EMPTY)          # nothing sent yet: the request goes elsewhere whole
        if merge is not None:
            data, error = merge.feed(data)
        else:
            data, error = migration.split_error(data)
        if data:
            record.add(data)
            if not respond.started:
                await respond.start(response.status, content_type, ((b"cache-control", b"no-cache"),))
            await respond.chunk(data)
        if error is not None:
            raise BackendFailed(error if error == migration.ABORTED else f"error event mid-stream: {error}")
    if not record.done and not record.so_far().finished:
        raise BackendFailed("the stream ended before its end")
    if not respond.started:
        await respond.start(response.status, content_type, ((b"cache-control", b"no-cache"),))
    await respond.end(pending)


async def _pass(response, content_type: bytes, respond: Responder) -> None:
    """A stream no one continues elsewhere: its bytes passed on as they come (BackendFailed when it breaks)."""
    read = response.content.readany
    while True:
        data = await read()
        if not data:
            break
        received()
        if not respond.started:
            await respond.start(response.status, content_type, ((b"cache-control", b"no-cache"),))
        await respond.chunk(data)
    if not respond.started:
        await respond.start(response.status, content_type, ((b"cache-control", b"no-cache"),))
    await respond.end()


def diverged(backend: "Backend") -> Exception:
    """The error for a replay that differs from what the client was sent."""
    return bad_gateway(f"The stream could not be continued on {backend.name}: the replayed answer differs from "
                       "the one already sent (the request is not deterministic: temperature > 0 without a seed?).")
