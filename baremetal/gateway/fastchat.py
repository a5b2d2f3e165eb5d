"""FastChat workers behind OpenAI's API: chat completions (with tool calling), completions and embeddings,
whole or streamed (SSE), built from the worker protocol (baremetal.gateway.worker).

Chat prompts come from baremetal.gateway.prompts; tool calls in the output are parsed by
baremetal.gateway.tool_calls, in streams as they complete (a call is sent as one delta with its id and
name, then one with its arguments). With n > 1, whole answers are generated concurrently and streamed
ones one choice after the other. Sampling defaults are OpenAI's (temperature 1, top_p 1); `max_tokens`
defaults to what the context leaves, and a prompt that leaves nothing is a 400 (the worker would
silently cut the start of the prompt).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from baremetal.gateway.errors import GatewayError, bad_request
from baremetal.gateway.exchange import JSON, ClientRequest, Responder
from baremetal.gateway.passthrough import stream_error_event
from baremetal.gateway.prompts import Prompt, build_prompt, normalise_messages
from baremetal.gateway.resume import generate
from baremetal.gateway.tool_calls import CompletedCall, Content, StreamParser, ToolRequest, parse_output, tool_request
from baremetal.gateway.upstream import BackendFailed, BackendUnreachable

if TYPE_CHECKING:
    from baremetal.gateway.app import Gateway
    from baremetal.gateway.failover import Failover
    from baremetal.gateway.routing import Backend

SSE = b"text/event-stream"
EMBEDDING_BATCH = 32
COMPLETIONS_DEFAULT_MAX_TOKENS = 16      # OpenAI's and vLLM's default for /v1/completions


async def serve(gateway: "Gateway", call: ClientRequest, backend: "Backend", respond: Responder,
                failover: "Failover | None" = None) -> None:
    """Answer `call` through the FastChat worker `backend` (a stream that breaks goes on at another worker)."""
    handlers = {"chat": _chat, "completions": _completions, "embeddings": _embeddings}
    handler = handlers.get(call.endpoint)
    if handler is None:
        raise bad_request(f"Model {call.model!r} runs on a FastChat worker, which does not serve {call.path}.")
    await handler(gateway, call, backend, respond, failover)


def _sse(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def _sampling(payload: dict) -> dict[str, Any]:
    """Sampling fields in the worker's names; OpenAI's defaults where the client sent none."""
    temperature = payload.get("temperature")
    top_p = payload.get("top_p")
    if temperature is not None and not 0 <= temperature <= 2:
        raise bad_request("'temperature' must be between 0 and 2.", param="temperature")
    if top_p is not None and not 0 < top_p <= 1:
        raise bad_request("'top_p' must be greater than 0 and at most 1.", param="top_p")
    params = {"temperature": 1.0 if temperature is None else float(temperature),
              "top_p": 1.0 if top_p is None else float(top_p),
              "top_k": payload.get("top_k") if payload.get("top_k") is not None else -1}
    for name in ("presence_penalty", "frequency_penalty", "repetition_penalty"):
        if payload.get(name) is not None:
            params[name] = float(payload[name])
    return params


def _stops(payload: dict) -> tuple[str, ...]:
    stop = payload.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if not all(isinstance(item, str) for item in stops):
        raise bad_request("'stop' must be a string or an array of strings.", param="stop")
    return tuple(item for item in stops if item)


def _choices(payload: dict) -> int:
    n = payload.get("n") or 1
    if not 1 <= n <= 16:
        raise bad_request("'n' must be between 1 and 16.", param="n")
    return n


async def _max_new_tokens(gateway: "Gateway", backend: "Backend", prompt: str, requested: int | None) -> int:
    """What fits: the worker cuts the start of a prompt that leaves no room, so refuse instead."""
    if requested is not None and requested < 1:
        raise bad_request("'max_tokens' must be at least 1.", param="max_tokens")
    context = await gateway.workers.context_length(backend)
    used = await gateway.workers.count_tokens(backend, prompt)
    room = context - used - 1
    if room <= 0:
        raise bad_request(f"This model's maximum context length is {context} tokens; the messages take {used}.",
                          param="messages", code="context_length_exceeded")
    return min(requested or room, room)


async def _generate_whole(gateway: "Gateway", backend: "Backend", params: dict) -> dict:
    """The worker's last chunk: the whole text, usage and finish reason."""
    last: dict = {"text": "", "finish_reason": "stop", "usage": {}}
    async with gateway.workers.generate(backend, params) as chunks:
        async for chunk in chunks:
            last = chunk
    return last


async def _all(coroutines: list) -> list:
    """Run concurrently; when one fails, stop the others (gather alone would leave them generating)."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def _usage(chunks: list[dict]) -> dict:
    prompt_tokens = max((c.get("usage", {}).get("prompt_tokens", 0) for c in chunks), default=0)
    completion = sum(c.get("usage", {}).get("completion_tokens", 0) for c in chunks)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


# -- chat -------------------------------------------------------------------------------------------
async def _chat(gateway: "Gateway", call: ClientRequest, backend: "Backend", respond: Responder,
                failover: "Failover | None") -> None:
    payload = call.payload
    tools = tool_request(payload)
    messages = normalise_messages(payload["messages"])
    n = _choices(payload)
    sampling = _sampling(payload)
    renderer, conversation = await gateway.prompt_source(backend)
    kwargs = payload.get("chat_template_kwargs")
    prompt = build_prompt(messages, tools, renderer, conversation, _stops(payload),
                          kwargs if isinstance(kwargs, dict) else None)
    requested = payload.get("max_completion_tokens") or payload.get("max_tokens")
    params = {"model": backend.model, "prompt": prompt.text, **sampling, "echo": False,
              "max_new_tokens": await _max_new_tokens(gateway, backend, prompt.text, requested),
              "stop": list(prompt.stop), "stop_token_ids": list(prompt.stop_token_ids)}
    identity = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": call.model}
    if payload.get("stream"):
        await _chat_stream(gateway, backend, respond, params, prompt, tools, n, identity,
                           _include_usage(payload), failover)
        return
    finals = await _all([_generate_whole(gateway, backend, params) for _ in range(n)])
    choices = [_chat_choice(index, final, prompt, tools) for index, final in enumerate(finals)]
    body = identity | {"object": "chat.completion", "choices": choices, "usage": _usage(finals)}
    await respond.whole(200, JSON, json.dumps(body, ensure_ascii=False).encode())


def _include_usage(payload: dict) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _chat_choice(index: int, final: dict, prompt: Prompt, tools: ToolRequest) -> dict:
    text = final.get("text", "")
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = final.get("finish_reason") or "stop"
    if tools.active:
        parsed = parse_output(prompt.prefill + text, tools.names, tools.parallel)
        message["content"] = parsed.content
        if parsed.tool_calls:
            message["tool_calls"] = [tool_call.to_openai() for tool_call in parsed.tool_calls]
            finish = "tool_calls"
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}


async def _chat_stream(gateway: "Gateway", backend: "Backend", respond: Responder, params: dict, prompt: Prompt,
                       tools: ToolRequest, n: int, identity: dict, include_usage: bool,
                       failover: "Failover | None") -> None:
    base = identity | {"object": "chat.completion.chunk"}

    def chunk(index: int, delta: dict, finish: str | None = None) -> bytes:
        return _sse(base | {"choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    if not respond.started:      # else held: the stream started with keep-alive comments
        await respond.start(200, SSE, ((b"cache-control", b"no-cache"),))
    finals: list[dict] = []
    try:
        for index in range(n):
            await respond.chunk(chunk(index, {"role": "assistant", "content": ""}))
            parser = StreamParser(tools.names, tools.parallel) if tools.active else None
            if parser:
                parser.feed(prompt.prefill)
            final, calls = await _stream_one(gateway, backend, respond, params, parser, index, chunk, failover)
            finals.append(final)
            finish = "tool_calls" if calls else (final.get("finish_reason") or "stop")
            await respond.chunk(chunk(index, {}, finish))
        if include_usage:
            await respond.chunk(_sse(base | {"choices": [], "usage": _usage(finals)}))
    except GatewayError as error:       # the worker reported an error mid-stream
        await respond.end(_sse(error.payload()) + b"data: [DONE]\n\n")
        return
    except (BackendFailed, BackendUnreachable) as error:
        await respond.end(stream_error_event(f"Worker {backend.name} failed mid-stream: {error}"))
        return
    await respond.end(b"data: [DONE]\n\n")


async def _stream_one(gateway: "Gateway", backend: "Backend", respond: Responder, params: dict,
                      parser: StreamParser | None, index: int, chunk, failover: "Failover | None") -> tuple[dict, int]:
    """One choice's deltas; returns the worker's last chunk and the number of tool calls sent."""
    previous, final = "", {}
    async with generate(gateway, backend, params, failover) as chunks:
        async for output in chunks:
            final = output
            text = output.get("text", "").replace("\ufffd", "")
            delta, previous = text[len(previous):], (text if len(text) > len(previous) else previous)
            if delta:
                for event in (parser.feed(delta) if parser else [Content(delta)]):
                    await respond.chunk(_chat_delta(event, index, chunk))
    for event in parser.finish() if parser else []:
        await respond.chunk(_chat_delta(event, index, chunk))
    return final, parser.calls if parser else 0


def _chat_delta(event: Content | CompletedCall, index: int, chunk) -> bytes:
    if isinstance(event, Content):
        return chunk(index, {"content": event.text})
    call = event.call
    head = {"index": event.index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
    return chunk(index, {"tool_calls": [head]}) + \
        chunk(index, {"tool_calls": [{"index": event.index, "function": {"arguments": call.arguments}}]})


# -- completions ------------------------------------------------------------------------------------
async def _completions(gateway: "Gateway", call: ClientRequest, backend: "Backend", respond: Responder,
                       failover: "Failover | None") -> None:
    payload = call.payload
    prompts = payload["prompt"] if isinstance(payload["prompt"], list) else [payload["prompt"]]
    if not prompts or not all(isinstance(text, str) for text in prompts):
        raise bad_request("'prompt' must be a string or an array of strings for this model (token ids are "
                          "not supported by FastChat workers).", param="prompt")
    n = _choices(payload)
    requested = payload.get("max_tokens") or COMPLETIONS_DEFAULT_MAX_TOKENS
    base = {"model": backend.model, **_sampling(payload), "echo": bool(payload.get("echo")),
            "stop": list(_stops(payload)), "stop_token_ids": []}
    if payload.get("logprobs") is not None:
        base["logprobs"] = payload["logprobs"]
    jobs = []
    for text in prompts:
        params = base | {"prompt": text, "max_new_tokens": await _max_new_tokens(gateway, backend, text, requested)}
        jobs += [params] * n
    identity = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": call.model}
    if payload.get("stream"):
        await _completions_stream(gateway, backend, respond, jobs, identity, _include_usage(payload), failover)
        return
    finals = await _all([_generate_whole(gateway, backend, params) for params in jobs])
    choices = [{"index": index, "text": final.get("text", ""), "logprobs": final.get("logprobs"),
                "finish_reason": final.get("finish_reason") or "stop"} for index, final in enumerate(finals)]
    body = identity | {"object": "text_completion", "choices": choices, "usage": _usage(finals)}
    await respond.whole(200, JSON, json.dumps(body, ensure_ascii=False).encode())


async def _completions_stream(gateway: "Gateway", backend: "Backend", respond: Responder, jobs: list[dict],
                              identity: dict, include_usage: bool, failover: "Failover | None") -> None:
    base = identity | {"object": "text_completion"}
    if not respond.started:
        await respond.start(200, SSE, ((b"cache-control", b"no-cache"),))
    finals = []
    try:
        for index, params in enumerate(jobs):
            previous, final = "", {}
            async with generate(gateway, backend, params, failover) as chunks:
                async for output in chunks:
                    final = output
                    text = output.get("text", "").replace("\ufffd", "")
                    delta, previous = text[len(previous):], (text if len(text) > len(previous) else previous)
                    if delta:
                        await respond.chunk(_sse(base | {"choices": [
                            {"index": index, "text": delta, "logprobs": None, "finish_reason": None}]}))
            finals.append(final)
            await respond.chunk(_sse(base | {"choices": [
                {"index": index, "text": "", "logprobs": None, "finish_reason": final.get("finish_reason") or "stop"}]}))
        if include_usage:
            await respond.chunk(_sse(base | {"choices": [], "usage": _usage(finals)}))
    except GatewayError as error:
        await respond.end(_sse(error.payload()) + b"data: [DONE]\n\n")
        return
    except (BackendFailed, BackendUnreachable) as error:
        await respond.end(stream_error_event(f"Worker {backend.name} failed mid-stream: {error}"))
        return
    await respond.end(b"data: [DONE]\n\n")


# -- embeddings -------------------------------------------------------------------------------------
async def _embeddings(gateway: "Gateway", call: ClientRequest, backend: "Backend", respond: Responder,
                      failover: "Failover | None") -> None:
    payload = call.payload
    inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
    if not inputs or not all(isinstance(text, str) for text in inputs):
        raise bad_request("'input' must be a string or an array of strings for this model (token ids are not "
                          "supported by FastChat workers).", param="input")
    if payload.get("dimensions") is not None:
        raise bad_request("'dimensions' is not supported by FastChat workers.", param="dimensions")
    encoding = payload.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    data, tokens = [], 0
    for start in range(0, len(inputs), EMBEDDING_BATCH):
        batch = inputs[start:start + EMBEDDING_BATCH]
        answer = await gateway.workers.embeddings(backend, {"model": backend.model, "input": batch,
                                                            "encoding_format": encoding})
        vectors = answer.get("embedding") or []
        data += [{"object": "embedding", "embedding": vector, "index": start + offset}
                 for offset, vector in enumerate(vectors)]
        tokens += int(answer.get("token_num") or 0)
    body = {"object": "list", "data": data, "model": call.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    await respond.whole(200, JSON, json.dumps(body).encode())
