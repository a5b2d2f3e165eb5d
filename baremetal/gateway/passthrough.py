"""vLLM servers and [[program]] backends: the request goes through unchanged (same path, same bytes) and
the answer comes back as the backend sent it. Streams are forwarded chunk by chunk as they arrive,
never decoded or re-encoded; other answers are read whole first, so that a backend failing half-way
gives the client a clean 502 instead of a truncated body.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from baremetal.gateway.exchange import ClientRequest, Responder
from baremetal.gateway.upstream import BackendFailed
from baremetal.gateway.witness import received

if TYPE_CHECKING:
    from baremetal.gateway.app import Gateway
    from baremetal.gateway.routing import Backend

REQUEST_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


def stream_error_event(message: str) -> bytes:
    """An SSE event in the shape vLLM uses for errors mid-stream (the openai SDK raises on it), then DONE."""
    error = {"error": {"message": message, "type": "upstream_error", "param": None, "code": "bad_gateway"}}
    return f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()


async def serve(gateway: "Gateway", call: ClientRequest, backend: "Backend", respond: Responder) -> None:
    """Forward `call` to `backend` and relay its answer."""
    upstream = gateway.upstream
    try:
        async with upstream.post(backend.url + call.path, call.body, REQUEST_HEADERS) as response:
            content_type = response.headers.get("Content-Type", "application/json").encode("latin-1")
            if not content_type.startswith(b"text/event-stream"):
                data = await response.read()
                received()
                await respond.whole(response.status, content_type, data)
                return
            await respond.start(response.status, content_type, ((b"cache-control", b"no-cache"),))
            try:
                async for data in response.content.iter_any():
                    received()
                    await respond.chunk(data)
            except upstream.errors as error:
                await respond.end(stream_error_event(f"Backend {backend.name} failed mid-stream: "
                                                     f"{upstream.classify(error)}"))
                return
            await respond.end()
    except upstream.errors as error:
        if respond.started:      # failed while sending the client the last bytes: nothing left to do
            raise BackendFailed(str(error)) from None
        raise upstream.classify(error) from None
