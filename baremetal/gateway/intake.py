"""Before the first attempt and after the last byte of one request: the request id, the key, the body,
the model (served, allowed for the key, of a task that serves the endpoint), the key's limits; then the
usage the engine reported, the per-key counters and the log line.

Headers passed to backends: X-Request-Id (the client's, else `req-<32 hex>`; vLLM makes it the answer's
id and logs it), W3C trace context (traceparent, tracestate) and User-Agent. The client's key never is.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Awaitable, Callable

from baremetal.gateway.endpoints import Endpoint, fastchat_mismatch, multipart_field, task_mismatch
from baremetal.gateway.errors import GatewayError, bad_request, model_not_found, unauthorized
from baremetal.gateway.exchange import ClientRequest, Responder, headers_of, read_body
from baremetal.gateway.usage import STREAM_USAGE_ENDPOINTS, StreamMeter, wants_stream_usage, with_stream_usage
from baremetal.gateway.validation import check_fields, parse_body

if TYPE_CHECKING:
    from baremetal.gateway.app import Gateway
    from baremetal.gateway.exchange import Handler
    from baremetal.gateway.failover import Failover
    from baremetal.gateway.routing import Backend

log = logging.getLogger("baremetal.gateway")
WANTED = frozenset({b"authorization", b"x-api-key", b"x-request-id", b"traceparent", b"tracestate", b"user-agent",
                    b"content-type"})
FORWARDED = {b"traceparent": "traceparent", b"tracestate": "tracestate", b"user-agent": "User-Agent"}
REQUEST_ID = re.compile(r"[A-Za-z0-9._:/=+@-]{1,128}\Z")
RESPONSE_ID = re.compile(rb'"id":\s*"(resp_[A-Za-z0-9_-]{1,128})"')


def take_request_id(offered: str | None, respond: Responder) -> None:
    """The client's X-Request-Id when it is a plain token (it lands in logs and in the answer's id), else a
    new one; one that could forge log lines is a 400 (which carries a new id)."""
    if offered and REQUEST_ID.match(offered):
        respond.request_id = offered
        return
    respond.request_id = "req-" + os.urandom(16).hex()
    if offered:
        raise bad_request("X-Request-Id must be 1 to 128 characters of letters, digits and ._:/=+@-",
                          param="X-Request-Id", code="invalid_request_id")


async def read_request(gateway: "Gateway", endpoint: Endpoint, scope: dict, receive: Callable[[], Awaitable[dict]],
                       respond: Responder) -> ClientRequest:
    """The request, checked: 401 (key), 400 (body, task), 404 (model unknown, or not this key's)."""
    headers = headers_of(scope, WANTED)
    take_request_id(headers.get(b"x-request-id"), respond)
    identity = gateway.keys.identify(headers.get(b"authorization"), headers.get(b"x-api-key"))
    if identity is None:
        raise unauthorized()
    respond.key = identity
    body = await read_body(scope, receive)
    if endpoint.body == "multipart":
        payload: dict = {}
        model = multipart_field(headers.get(b"content-type"), body, "model")
        if not model:
            raise bad_request("'model' is required (a form field of the multipart upload).", param="model")
    else:
        payload = parse_body(body)
        model = check_fields(endpoint.name, payload)
    backends = await gateway.backends_of(model, identity)
    first = backends[0]
    mismatch = (fastchat_mismatch(model, endpoint, scope["path"]) if first.kind == "fastchat"
                else task_mismatch(model, first.task, endpoint, scope["path"]))
    if mismatch is not None:
        raise mismatch
    respond.model = model
    upstream = {"Content-Type": headers.get(b"content-type", "application/json") if endpoint.body == "multipart"
                else "application/json", "Accept-Encoding": "identity", "X-Request-Id": respond.request_id}
    for name, title in FORWARDED.items():
        if name in headers:
            upstream[title] = headers[name]
    return ClientRequest(endpoint.name, scope["path"], body, payload, model, respond.request_id, upstream, identity)


def visible_models(names: list[str], identity) -> list[str]:
    """The models a key may see (a model outside its list does not exist for it)."""
    return [name for name in names if identity.allows(name)]


def not_found_for(model: str, names: list[str], identity) -> GatewayError:
    return model_not_found(model, visible_models(names, identity))


def admit(gateway: "Gateway", call: ClientRequest) -> bool:
    """Count the request against its key's limits, or raise the 429. True when counted (settle then books it)."""
    refused = gateway.limiter.admit(call.key)
    if refused is None:
        return call.key.limited
    gateway.usage.rate_limited(call.key.name, refused.limit)
    raise refused.error(call.key.name)


def metered(inner: "Handler", ask_usage: bool) -> "Handler":
    """`inner` with the answer's usage metered; with `ask_usage`, chat and completions streams whose client
    did not ask for usage ask the engine for it, and the usage event is taken out again."""
    async def serve(gateway: "Gateway", call: ClientRequest, backend: "Backend", respond: Responder,
                    failover: "Failover | None" = None) -> None:
        strip = False
        if (ask_usage and call.endpoint in STREAM_USAGE_ENDPOINTS and call.payload.get("stream") is True
                and not wants_stream_usage(call.payload)):
            call, strip = with_stream_usage(call), True
        respond.meter = StreamMeter(strip)
        await inner(gateway, call, backend, respond, failover)
        if call.endpoint == "responses" and backend.kind != "fastchat":
            found = RESPONSE_ID.search(respond.head)
            if found:
                gateway.response_ids.remember(found.group(1).decode(), backend)

    serve.inner = inner         # the code that serves (a stream moves only between backends of the same)
    return serve


def settle(gateway: "Gateway", scope: dict, respond: Responder, backend: str, admitted: bool) -> None:
    """After the answer (whatever it was): the key's tokens and counters, its limits released, the log line."""
    status = respond.status or 499
    usage = respond.usage
    key = respond.key
    if key is not None:
        gateway.usage.answered(key.name, respond.model, status, usage)
        if admitted:
            gateway.limiter.finish(key, usage.total)
    if gateway.access_log:
        log.info("%s %s %d model=%s backend=%s key=%s tokens=%d+%d %.1fms request_id=%s", scope["method"],
                 scope["path"], status, respond.model or "-", backend or "-", key.name if key else "-",
                 usage.prompt, usage.completion, 1000 * (time.perf_counter() - respond.started_s),
                 respond.request_id)
    elif status >= 500 and status != 503:
        log.warning("%s %s answered %d (model %s, backend %s, request_id %s)", scope["method"], scope["path"],
                    status, respond.model or "-", backend or "-", respond.request_id)
