"""The gateway's state (routes, balancer, watchdog view, metrics, clients) and its Starlette app.

POST endpoints are Exchange apps (baremetal.gateway.exchange); GET endpoints are small functions here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from baremetal.config.model import Stack
from baremetal.gateway import fastchat, flights, passthrough
from baremetal.gateway.auth import authorized
from baremetal.gateway.chat_template import TemplateRenderer, load_model_template
from baremetal.gateway.connections import ClientLimits
from baremetal.gateway.conversation import Conversation
from baremetal.gateway.draining import DrainReader
from baremetal.gateway.errors import GatewayError, model_not_found, unauthorized
from baremetal.gateway.exchange import Exchange, Handler
from baremetal.gateway.health import VerdictReader
from baremetal.gateway.metrics import Metrics
from baremetal.gateway.routing import Backend, Balancer, routes_from_stack
from baremetal.gateway.upstream import Upstream
from baremetal.gateway.witness import Witness
from baremetal.gateway.worker import ControllerDirectory, WorkerClient
from baremetal.metrics.prometheus import CONTENT_TYPE

log = logging.getLogger("baremetal.gateway")

POST_ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings",
               "/v1/rerank": "rerank", "/rerank": "rerank", "/v2/rerank": "rerank",
               "/v1/score": "score", "/score": "score"}


class Gateway:
    """Everything one gateway process knows; created once, used from its one event loop."""

    def __init__(self, stack: Stack, keys: list[str]):
        self.balancer = Balancer()
        self.metrics = Metrics()
        self.started_s = int(time.time())
        self.limits = ClientLimits()
        self.flights = flights.Flights()
        self._monitor: asyncio.Task | None = None
        self.upstream: Upstream | None = None
        self.workers: WorkerClient | None = None
        self.directory: ControllerDirectory | None = None
        self.witness: Witness | None = None
        self._witness_task: Any = None
        self.configure(stack, keys)

    def configure(self, stack: Stack, keys: list[str]) -> None:
        """Take the stack's settings: at start, and again on a reload (SIGHUP). Requests in flight keep
        the backend they were sent to; the next ones see the new keys, routes and limits."""
        from baremetal.engines.fastchat import controller_url

        self.stack = stack
        self.keys = keys
        self.routes = routes_from_stack(stack)
        self.watchdog = VerdictReader(stack.watchdog_state_path,
                                      stale_after_s=max(30.0, 10 * stack.watchdog.interval_s))
        self.drains = DrainReader(stack.drain_path)
        if self.witness is None:
            self.witness = Witness(stack.gateway_state_path, self.routes, self.drains.draining, self.routable,
                                   on_drained=self.metrics.drained)
        else:
            self.witness.follow(self.routes, self.drains.draining)
        self.controller_url = controller_url(stack.controller) if stack.controller.enabled else None
        self._renderers: dict[Path, TemplateRenderer | None] = {}
        self.limits.client_timeout_s = stack.api.client_timeout_s
        self.limits.max_connections = stack.api.max_connections
        if self.upstream is not None:
            self.upstream.set_timeouts(stack.api.backend_connect_timeout_s, stack.api.backend_idle_timeout_s)
            self.directory = ControllerDirectory(self.upstream, self.controller_url) if self.controller_url else None

    async def start(self) -> None:
        """Open the HTTP client (it belongs to the running event loop) and start the request monitor."""
        self.upstream = Upstream(self.stack.api.backend_connect_timeout_s, self.stack.api.backend_idle_timeout_s)
        self.workers = WorkerClient(self.upstream)
        if self.controller_url:
            self.directory = ControllerDirectory(self.upstream, self.controller_url)
        self._monitor = asyncio.ensure_future(flights.watch(self))
        self._witness_task = asyncio.ensure_future(self.witness.run())

    async def stop(self) -> None:
        if self._monitor:
            self._monitor.cancel()
        if self._witness_task is not None:
            self._witness_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._witness_task
            self.witness.close()
        if self.upstream:
            await self.upstream.close()

    def handler(self, backend: Backend) -> Handler:
        return fastchat.serve if backend.kind == "fastchat" else passthrough.serve

    async def backends_of(self, model: str) -> tuple[Backend, ...]:
        """The backends of `model`: the stack's, else those the FastChat controller knows; else a 404."""
        backends = self.routes.get(model)
        if backends:
            return backends
        if self.directory:
            found = await self.directory.refresh(set(self.routes))
            if model in found:
                return found[model]
        raise model_not_found(model, await self.model_names())

    async def model_names(self) -> list[str]:
        names = list(self.routes)
        if self.directory:
            names += [name for name in await self.directory.refresh(set(self.routes)) if name not in self.routes]
        return names

    async def prompt_source(self, backend: Backend) -> tuple[TemplateRenderer | None, Conversation | None]:
        """The model's own chat template when its folder has one, else the worker's conversation template."""
        folder = backend.model_dir
        if folder is not None and not backend.worker_template:
            if folder not in self._renderers:
                template = load_model_template(folder)
                self._renderers[folder] = TemplateRenderer(template, backend.model) if template else None
            if self._renderers[folder] is not None:
                return self._renderers[folder], None
        return None, await self.workers.conversation(backend)

    def routable(self) -> set[str]:
        """The backends that would get a new request now: not draining, not skipped on the watchdog's word,
        not backing off after a refused connection (no network calls)."""
        unhealthy, draining = self.watchdog.unhealthy(), self.drains.draining()
        now = time.monotonic()
        return {b.name for backends in self.routes.values() for b in backends
                if (b.name not in unhealthy or unhealthy[b.name].last_resort)
                and self.balancer.state(b).down_until_s <= now and b.name not in draining}

    def availability(self) -> dict[str, dict[str, Any]]:
        """Per model: how many backends, which can take requests now, which drain, how many requests are
        in flight and held (no network calls)."""
        routable, draining = self.routable(), self.drains.draining()
        return {model: {"backends": len(backends), "available": [b.name for b in backends if b.name in routable],
                        "draining": [b.name for b in backends if b.name in draining],
                        "in_flight": sum(self.balancer.state(b).in_flight for b in backends),
                        "held": self.metrics.held.get(model, 0)}
                for model, backends in self.routes.items()}


def _json(payload: Any, status: int = 200):
    from starlette.responses import JSONResponse

    return JSONResponse(payload, status_code=status)


def _error(error: GatewayError):
    from starlette.responses import Response

    return Response(error.body(), status_code=error.status, media_type="application/json")


def create_app(gateway: Gateway):
    """The ASGI app: OpenAI endpoints, /health (open), /metrics."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    def check_key(request: Request) -> None:
        if not authorized(request.headers.get("authorization"), gateway.keys):
            raise unauthorized()

    async def list_models(request: Request):
        check_key(request)
        data = [{"id": name, "object": "model", "created": gateway.started_s, "owned_by": "baremetal"}
                for name in await gateway.model_names()]
        return _json({"object": "list", "data": data})

    async def one_model(request: Request):
        check_key(request)
        name = request.path_params["model"]
        await gateway.backends_of(name)
        return _json({"id": name, "object": "model", "created": gateway.started_s, "owned_by": "baremetal"})

    async def health(request: Request):
        return _json({"status": "ok", "models": gateway.availability()})

    async def metrics(request: Request):
        check_key(request)
        return PlainTextResponse(gateway.metrics.render(), media_type=CONTENT_TYPE)

    async def gateway_error(request: Request, error: GatewayError):
        return _error(error)

    async def http_error(request: Request, error: HTTPException):
        if error.status_code == 404:
            return _error(GatewayError(404, f"No such endpoint: {request.method} {request.url.path}. The gateway "
                                       f"serves /v1/models, {', '.join(POST_ROUTES)}, /health and /metrics.",
                                       code="unknown_url"))
        return _error(GatewayError(error.status_code, f"{request.method} is not allowed on {request.url.path}.",
                                   code="method_not_allowed"))

    async def unexpected(request: Request, error: Exception):
        log.error("unexpected error on %s %s: %r", request.method, request.url.path, error, exc_info=error)
        return _error(GatewayError(500, "The gateway failed on this request; its log has the details.",
                                   "server_error", "internal_error"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        from baremetal.gateway.reload import announce, listen_for_reloads

        await gateway.start()
        listen_for_reloads(gateway)
        announce(gateway)
        try:
            yield
        finally:
            await gateway.stop()

    exchanges = {path: Exchange(gateway, endpoint) for path, endpoint in POST_ROUTES.items()}
    routes = [Route("/v1/models", list_models, methods=["GET"]),
              Route("/v1/models/{model:path}", one_model, methods=["GET"]),
              Route("/health", health, methods=["GET"]),
              Route("/metrics", metrics, methods=["GET"])]
    routes += [Route(path, exchange, methods=["POST"]) for path, exchange in exchanges.items()]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={GatewayError: gateway_error, HTTPException: http_error, Exception: unexpected})
    return FastPath(exchanges, app)


class FastPath:
    """POSTs to the OpenAI endpoints go straight to their Exchange (which answers every error itself);
    the rest (GETs, unknown paths, lifespan) to Starlette. Skipping Starlette's middleware and routing
    layers on the hot path saved about a tenth of the gateway's CPU per request (py-spy, 64 concurrent)."""

    def __init__(self, exchanges: dict[str, Exchange], app: Any):
        self.exchanges = exchanges
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            exchange = self.exchanges.get(scope["path"])
            if exchange is not None:
                await exchange(scope, receive, send)
                return
        await self.app(scope, receive, send)
