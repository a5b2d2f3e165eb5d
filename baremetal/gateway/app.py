"""The gateway's state (routes, keys, limits, balancer, watchdog view, metrics, clients) and its Starlette app.

POST endpoints are Exchange apps (baremetal.gateway.exchange), one per path of
baremetal.gateway.endpoints; GET endpoints are small functions here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from baremetal import __version__
from baremetal.config.model import Stack
from baremetal.gateway import fastchat, flights, intake, passthrough, responses_stream
from baremetal.gateway.chat_template import TemplateRenderer, load_model_template
from baremetal.gateway.connections import ClientLimits
from baremetal.gateway.conversation import Conversation
from baremetal.gateway.draining import DrainReader
from baremetal.gateway.endpoints import BY_PATH
from baremetal.gateway.errors import GatewayError, bad_gateway, unauthorized
from baremetal.gateway.exchange import Exchange, Handler
from baremetal.gateway.health import VerdictReader
from baremetal.gateway.keys import OPEN, KeyIdentity, KeyTable
from baremetal.gateway.limits import Limiter
from baremetal.gateway.metrics import Metrics
from baremetal.gateway.models import ModelCatalog, common_version
from baremetal.gateway.routing import Backend, Balancer, ResponseOwners, routes_from_stack
from baremetal.gateway.upstream import BackendFailed, BackendUnreachable, Upstream
from baremetal.gateway.usage import UsageBook
from baremetal.gateway.witness import Witness
from baremetal.gateway.worker import ControllerDirectory, WorkerClient
from baremetal.gateway.workers import WRITE_EVERY_S, node_page, worker_page
from baremetal.host.files import atomic_write
from baremetal.metrics import prometheus
from baremetal.metrics.prometheus import CONTENT_TYPE

log = logging.getLogger("baremetal.gateway")


async def _fastchat(gateway: "Gateway", call, backend: Backend, respond, failover=None) -> None:
    """FastChat workers: their chat path, and the Responses API built on it."""
    if call.endpoint == "responses":
        await responses_stream.serve(gateway, call, backend, respond, fastchat.serve, failover)
    else:
        await fastchat.serve(gateway, call, backend, respond, failover)


HANDLERS: dict[str, Handler] = {"vllm": intake.metered(passthrough.serve, ask_usage=True),
                                "program": intake.metered(passthrough.serve, ask_usage=False),
                                "fastchat": intake.metered(_fastchat, ask_usage=True)}


class Gateway:
    """Everything one gateway process knows; created once, used from its one event loop."""

    def __init__(self, stack: Stack, keys: KeyTable, access_log: bool = False, limiter=None,
                 worker: tuple[int, Path] | None = None):
        self.balancer = Balancer()
        self.metrics = Metrics()
        self.started_s = int(time.time())
        self.limits = ClientLimits()
        # counts by key name, so a reload's new key table keeps what was used; a SharedLimiter when several
        # worker processes share the port
        self.limiter = limiter or Limiter()
        self.worker = worker              # (index, folder of the workers' metrics pages) with api.workers > 1
        self._writer: asyncio.Task | None = None
        self.usage = UsageBook()
        self.intake = intake
        self.access_log = access_log
        self.response_ids = ResponseOwners()
        self.flights = flights.Flights()
        self._monitor: asyncio.Task | None = None
        self.upstream: Upstream | None = None
        self.workers: WorkerClient | None = None
        self.directory: ControllerDirectory | None = None
        self.catalog: ModelCatalog | None = None
        self.witness: Witness | None = None
        self._witness_task: Any = None
        self.configure(stack, keys)

    def configure(self, stack: Stack, keys: KeyTable) -> None:
        """Take the stack's settings: at start, and again on a reload (SIGHUP). Requests in flight keep
        the backend they were sent to; the next ones see the new keys, routes and limits."""
        from baremetal.engines.fastchat import controller_url

        self.stack = stack
        self.keys = keys                  # replaced whole on a reload; the limiter keeps counting by name
        self.routes = routes_from_stack(stack)
        self.watchdog = VerdictReader(stack.watchdog_state_path,
                                      stale_after_s=max(30.0, 10 * stack.watchdog.interval_s))
        self.drains = DrainReader(stack.drain_path)
        if self.witness is None:
            self.witness = Witness(stack.gateway_state_path, self.routes, self.drains.draining, self.routable,
                                   on_drained=self.metrics.drained, shared=self.worker)
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
        self.catalog = ModelCatalog(self.upstream, self.workers, self.started_s)
        if self.controller_url:
            self.directory = ControllerDirectory(self.upstream, self.controller_url)
        if self.worker:
            self._writer = asyncio.ensure_future(self._write_page())
        self._monitor = asyncio.ensure_future(flights.watch(self))
        self._witness_task = asyncio.ensure_future(self.witness.run())

    async def stop(self) -> None:
        if self._writer:
            self._writer.cancel()
        if self._monitor:
            self._monitor.cancel()
        if self._witness_task is not None:
            self._witness_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._witness_task
            self.witness.close()
        if self.upstream:
            await self.upstream.close()

    def metrics_page(self) -> str:
        """The Prometheus page: this process's counters, summed over the workers when there are several."""
        own = self.metrics.render() + prometheus.page(self.usage.render_lines())
        return node_page(self.worker[1], self.worker[0], own) if self.worker else own

    async def _write_page(self) -> None:
        """Publish this worker's counters for the others' /metrics, every WRITE_EVERY_S."""
        index, folder = self.worker
        while True:
            text = self.metrics.render() + prometheus.page(self.usage.render_lines())
            try:
                atomic_write(worker_page(folder, index), text, mode=0o600, durable=False)
            except OSError as error:
                log.warning("cannot write %s: %s", worker_page(folder, index), error)
            await asyncio.sleep(WRITE_EVERY_S)

    def handler(self, backend: Backend) -> Handler:
        return HANDLERS[backend.kind]

    async def backends_of(self, model: str, key: KeyIdentity = OPEN) -> tuple[Backend, ...]:
        """The backends of `model`: the stack's, else those the FastChat controller knows; else a 404 (also
        for a model outside the key's list: it does not exist for that key)."""
        backends = self.routes.get(model) if key.allows(model) else None
        if backends:
            return backends
        if self.directory and key.allows(model):
            found = await self.directory.refresh(set(self.routes))
            if model in found:
                return found[model]
        raise intake.not_found_for(model, await self.model_names(), key)

    async def all_backends(self) -> dict[str, tuple[Backend, ...]]:
        """Every model with its backends, the controller's extra ones included."""
        models = dict(self.routes)
        if self.directory:
            models |= {name: found for name, found in (await self.directory.refresh(set(self.routes))).items()
                       if name not in models}
        return models

    def fallback_facts(self) -> dict[str, dict]:
        """What the stack file says of each model, for when its backends do not answer."""
        facts: dict[str, dict] = {}
        for model in self.stack.models:
            entry = facts.setdefault(model.name, {"root": str(model.path)})
            if model.max_model_len:
                entry["max_model_len"] = model.max_model_len
        return facts

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

    def check_key(request: Request) -> KeyIdentity:
        identity = gateway.keys.identify(request.headers.get("authorization"), request.headers.get("x-api-key"))
        if identity is None:
            raise unauthorized()
        return identity

    async def list_models(request: Request):
        key = check_key(request)
        models = {name: backends for name, backends in (await gateway.all_backends()).items() if key.allows(name)}
        return _json({"object": "list", "data": await gateway.catalog.entries(models, gateway.fallback_facts())})

    async def one_model(request: Request):
        key = check_key(request)
        name = request.path_params["model"]
        backends = await gateway.backends_of(name, key)
        return _json((await gateway.catalog.entries({name: backends}, gateway.fallback_facts()))[0])

    async def version(request: Request):
        check_key(request)
        engines = [b for backends in gateway.routes.values() for b in backends if b.kind == "vllm"]
        versions = await gateway.catalog.versions(engines)
        return _json({"version": common_version(versions, __version__), "baremetal": __version__,
                      "backends": versions})

    async def stored_response(request: Request):
        """GET /v1/responses/{id} and POST /v1/responses/{id}/cancel, to the backend that made the Response."""
        key = check_key(request)
        response_id = request.path_params["response_id"]
        owner = gateway.response_ids.owner(response_id)
        if owner is None or not key.allows(owner.model):
            raise GatewayError(404, f"Response {response_id!r} is not known here: the gateway sends these to the "
                               "backend that made the Response, and remembers the last 10000 (vLLM keeps Responses "
                               "only with VLLM_ENABLE_RESPONSES_API_STORE=1).", code="response_not_found")
        try:
            status, content_type, body = await gateway.upstream.forward(
                request.method, owner.url + request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                {"Accept-Encoding": "identity"}, await request.body())
        except (BackendUnreachable, BackendFailed) as error:
            raise bad_gateway(f"Backend {owner.name} of model {owner.model!r} failed: {error}") from None
        from starlette.responses import Response

        return Response(body, status_code=status, media_type=content_type)

    async def health(request: Request):
        return _json({"status": "ok", "models": gateway.availability()})

    async def metrics(request: Request):
        check_key(request)
        return PlainTextResponse(gateway.metrics_page(), media_type=CONTENT_TYPE)

    async def gateway_error(request: Request, error: GatewayError):
        return _error(error)

    async def http_error(request: Request, error: HTTPException):
        if error.status_code == 404:
            return _error(GatewayError(404, f"No such endpoint: {request.method} {request.url.path}. The gateway "
                                       f"serves GET /v1/models, /version, /health, /metrics and POST "
                                       f"{', '.join(BY_PATH)}.", code="unknown_url"))
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

    exchanges = {path: Exchange(gateway, endpoint) for path, endpoint in BY_PATH.items()}
    routes = [Route("/v1/models", list_models, methods=["GET"]),
              Route("/v1/models/{model:path}", one_model, methods=["GET"]),
              Route("/version", version, methods=["GET"]),
              Route("/v1/responses/{response_id}", stored_response, methods=["GET"]),
              Route("/v1/responses/{response_id}/cancel", stored_response, methods=["POST"]),
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
