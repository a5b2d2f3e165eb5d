"""A minimal real OpenAI-style upstream for gateway tests and scripts/bench_gateway.py.

Run: python -m tests.gateway.upstream --port PORT [--name NAME]. A uvicorn server (as vLLM's is) that
answers at once with fixed bodies: chat and text completions (whole or streamed), embeddings, rerank,
score, and Responses (POST /v1/responses with a `resp_` id; GET /v1/responses/ID and POST .../cancel).
Request fields steer it (the gateway passes unknown fields through): `x_delay_s` waits before
answering, `x_chunks` sets the number of streamed chunks (and the completion tokens of the usage event a
stream gets with `stream_options.include_usage`), `x_interval_s` the pause after each, `x_status`
answers with that status, and `x_fault: {NAME: FAULT}` makes only the upstream called NAME misbehave:
"status:503" answers 503, "drop_after:N" breaks the connection after N streamed chunks, "hang_after:N"
goes silent after them, "abort_after:N" ends the stream after N chunks as vLLM ends the requests its
stopping engine drops (a last chunk with finish_reason "abort", then [DONE]; a whole chat answer: its
first word with finish_reason "abort"), "empty" answers a stream with `data: [DONE]` alone (as vLLM's
API server does for a request it drops as it stops, before the engine gave it a token), "delay:S" waits S
seconds before answering. `--graceful-s 0` makes it cut its requests in flight on SIGTERM, as a server that
does not drain.
GET /_seen returns what it saw: every request (path, headers, body) and which ones the client abandoned.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

SEEN: dict[str, list] = {"requests": [], "abandoned": []}
NAME = "upstream"


def _chat(model: str) -> bytes:
    return json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": model,
                       "served_by": NAME,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}).encode()


def _chunk(model: str, delta: dict, finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model, "served_by": NAME,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _answer(path: str, payload: dict) -> bytes:
    model = payload.get("model", "")
    if path == "/v1/responses":
        return json.dumps({"id": f"resp_{NAME.replace('-', '')}{len(SEEN['requests'])}", "object": "response",
                           "model": model, "served_by": NAME, "output": [],
                           "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}}).encode()
    if path.startswith("/v1/responses/"):                       # a stored Response, or its cancel
        return json.dumps({"id": path.split("/")[3], "object": "response", "served_by": NAME}).encode()
    if path.endswith("/embeddings"):
        inputs = payload.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        return json.dumps({"object": "list", "model": model, "served_by": NAME,
                           "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                                    for i in range(count)],
                           "usage": {"prompt_tokens": count, "total_tokens": count}}).encode()
    if path.endswith("rerank"):
        documents = payload.get("documents", [])
        return json.dumps({"id": "rerank-1", "model": model, "served_by": NAME,
                           "results": [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(len(documents))],
                           "usage": {"total_tokens": 3}}).encode()
    if path.endswith("score"):
        return json.dumps({"id": "score-1", "object": "list", "model": model, "served_by": NAME,
                           "data": [{"index": 0, "object": "score", "score": 0.5}]}).encode()
    if path.endswith("/completions") and "chat" not in path:
        return json.dumps({"id": "cmpl-1", "object": "text_completion", "created": 0, "model": model,
                           "served_by": NAME,
                           "choices": [{"index": 0, "text": " world", "finish_reason": "stop"}]}).encode()
    return _chat(model)


async def _read(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["method"] == "GET":
        body = json.dumps(SEEN).encode() if scope["path"] == "/_seen" else \
            _answer(scope["path"], {}) if scope["path"].startswith("/v1/responses/") else b'{"status": "ok"}'
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    raw = await _read(receive)
    payload = json.loads(raw or b"{}")
    headers = {key.decode(): value.decode() for key, value in scope["headers"]}
    SEEN["requests"].append({"path": scope["path"], "headers": headers, "body": raw.decode()})
    try:
        await _respond(scope, receive, send, payload)
    except (OSError, asyncio.CancelledError):
        SEEN["abandoned"].append(scope["path"])
        raise


async def _respond(scope, receive, send, payload: dict) -> None:
    fault = (payload.get("x_fault") or {}).get(NAME, "")
    kind, _, number = fault.partition(":")
    delay_s = float(number) if kind == "delay" else float(payload.get("x_delay_s", 0))
    if delay_s:
        waiter = asyncio.ensure_future(receive())      # http.disconnect arrives here if the client leaves
        done, _ = await asyncio.wait({waiter}, timeout=delay_s)
        if done:
            SEEN["abandoned"].append(scope["path"])
            return
        waiter.cancel()
    status = int(number) if kind == "status" else int(payload.get("x_status", 200))
    if status != 200:
        body = json.dumps({"error": {"message": f"told to answer {status}", "type": "test", "code": status}}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    if not payload.get("stream"):
        body = _answer(scope["path"], payload)
        if kind == "abort_after" and scope["path"].endswith("/chat/completions"):
            answer = json.loads(body)
            answer["choices"][0].update(message={"role": "assistant", "content": "Hello"}, finish_reason="abort")
            body = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    model = payload.get("model", "")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    if kind == "empty":
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        return
    await send({"type": "http.response.body", "body": _chunk(model, {"role": "assistant", "content": ""}),
                "more_body": True})
    interval_s = float(payload.get("x_interval_s", 0))
    watcher = asyncio.ensure_future(receive()) if interval_s else None   # uvicorn's send() stays silent
    for index in range(int(payload.get("x_chunks", 8))):
        if kind in ("drop_after", "hang_after", "abort_after") and index == int(number):
            if kind == "abort_after":
                await send({"type": "http.response.body", "body": _chunk(model, {}, "abort") + b"data: [DONE]\n\n"})
                return
            if kind == "drop_after":
                raise ConnectionResetError("told to drop the connection")     # uvicorn closes it mid-body
            await receive()                                                   # silent until the client leaves
            SEEN["abandoned"].append(scope["path"])
            return
        await send({"type": "http.response.body", "body": _chunk(model, {"content": f"tok{index} "}), "more_body": True})
        if watcher:
            await asyncio.sleep(interval_s)
            if watcher.done():
                SEEN["abandoned"].append(scope["path"])
                return
    if watcher:
        watcher.cancel()
    tail = _chunk(model, {}, "stop")
    if (payload.get("stream_options") or {}).get("include_usage"):        # OpenAI's usage event, asked for
        chunks = int(payload.get("x_chunks", 8))
        tail += b"data: " + json.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                                        "model": model, "served_by": NAME, "choices": [],
                                        "usage": {"prompt_tokens": 5, "completion_tokens": chunks,
                                                  "total_tokens": 5 + chunks}}).encode() + b"\n\n"
    await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})


def main() -> None:
    import uvicorn

    global NAME
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--graceful-s", type=float, default=None, help="on SIGTERM, give requests in flight this "
                        "long before cutting them (default: wait for all, as uvicorn does)")
    args = parser.parse_args()
    NAME = args.name
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=args.graceful_s)


if __name__ == "__main__":
    main()
