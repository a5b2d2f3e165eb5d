"""FastChat worker output that goes on at another worker (or the same one, restarted) when its worker
fails mid-answer: the connection drops, the worker reports an internal error, or the gateway gives up
on it (stuck, or silent past the stall limit).

The gateway builds FastChat prompts itself, so the rest of an answer is asked for with that prompt
plus the text generated so far, and `max_new_tokens` less the tokens the worker said it generated.
Callers see one stream of outputs, each with the whole text so far and the usage of the whole answer,
as a single worker's would be: the deltas, the tool-call parser and the usage in
baremetal.gateway.fastchat go on unchanged.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator

from baremetal.gateway.errors import GatewayError
from baremetal.gateway.upstream import BackendFailed, BackendUnreachable

if TYPE_CHECKING:
    from baremetal.gateway.app import Gateway
    from baremetal.gateway.failover import Failover
    from baremetal.gateway.routing import Backend


def rest_params(params: dict, before: str, tokens: int) -> dict | None:
    """The worker request for the rest of an answer of which `before` (`tokens` tokens) was generated;
    None when nothing is left to generate. Pure."""
    left = params["max_new_tokens"] - tokens
    if left < 1:
        return None
    if params.get("echo"):          # the text so far starts with the prompt already
        return params | {"prompt": before, "max_new_tokens": left, "echo": False}
    return params | {"prompt": params["prompt"] + before, "max_new_tokens": left}


def joined(output: dict, before: str, tokens: int, prompt_tokens: int | None) -> dict:
    """A worker output of the rest, as part of the whole answer (text and usage). Pure."""
    if not before and not tokens:
        return output
    usage = output.get("usage") or {}
    completion = tokens + int(usage.get("completion_tokens") or 0)
    prompt = prompt_tokens if prompt_tokens is not None else int(usage.get("prompt_tokens") or 0)
    return output | {"text": before + output.get("text", ""),
                     "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion}}


@asynccontextmanager
async def generate(gateway: "Gateway", backend: "Backend", params: dict,
                   failover: "Failover | None" = None) -> AsyncIterator[AsyncIterator[dict]]:
    """`async with` the worker output stream of `params`, as WorkerClient.generate, continued elsewhere
    when its worker fails (with a `failover`)."""
    if failover is None:
        async with gateway.workers.generate(backend, params) as chunks:
            yield chunks
        return
    outputs = _outputs(gateway, backend, params, failover)
    try:
        yield outputs
    finally:
        await outputs.aclose()


async def _outputs(gateway: "Gateway", backend: "Backend", params: dict, failover: "Failover") -> AsyncIterator[dict]:
    before, tokens, prompt_tokens = "", 0, None
    current: dict | None = params
    while current is not None:
        text, completion = "", 0
        try:
            async with gateway.workers.generate(backend, current) as chunks:
                async for output in chunks:
                    text = output.get("text", "")
                    usage = output.get("usage") or {}
                    completion = int(usage.get("completion_tokens") or 0)
                    if prompt_tokens is None and usage.get("prompt_tokens") is not None:
                        prompt_tokens = int(usage["prompt_tokens"])
                    yield joined(output, before, tokens, prompt_tokens)
            return
        except (BackendFailed, BackendUnreachable) as error:
            failure: Exception = error
        except GatewayError as error:       # the worker reported an error: its own (5xx) fault goes on elsewhere
            if error.status < 500:
                raise
            failure = BackendFailed(error.message)
        except asyncio.CancelledError:
            failure = failover.flight.abandoned()
            if failure is None:
                raise
        before, tokens = before + text.rstrip("\ufffd"), tokens + completion   # with echo, the first text has the prompt
        backend = await failover.move(failure)
        current = rest_params(params, before, tokens)
        failover.note(f"continues on {backend.name} after {len(before)} characters")
    usage = {"prompt_tokens": prompt_tokens or 0, "completion_tokens": tokens, "total_tokens": (prompt_tokens or 0) + tokens}
    yield {"text": before, "error_code": 0, "usage": usage, "finish_reason": "length"}
