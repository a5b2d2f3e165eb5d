"""The stack file as frozen dataclasses. Defaults are filled in by the reader, so nothing downstream
looks at raw TOML. Paths are absolute; durations are seconds (`*_s`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

ENGINES = ("vllm", "fastchat", "fastchat-vllm")
FASTCHAT_ENGINES = ("fastchat", "fastchat-vllm")
TASKS = ("chat", "embed", "rerank")
ENV_KINDS = ("venv", "conda", "system")
ENV_EXTRAS = ("flash-attn",)     # opt-in additions that `baremetal install` knows how to build
API_KINDS = ("gateway", "fastchat", "fastchat-tools", "none")
DISTRIBUTED_BACKENDS = ("mp", "ray")


def connect_host(bind_host: str) -> str:
    """The address to connect to for a server bound to `bind_host` (wildcards mean this host)."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "", "*") else ("[::1]" if bind_host == "::" else bind_host)


def frozen_mapping(values: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """A read-only view of a copy of `values`, for dataclass fields."""
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class StackInfo:
    name: str
    root: Path
    models_dir: Path | None
    timezone: str | None
    environment: Mapping[str, str] = field(default_factory=frozen_mapping)   # for every program


@dataclass(frozen=True)
class Env:
    """A named runtime environment. `packages` is None when the stack leaves them to the engines."""

    name: str
    kind: str
    path: Path | None          # venv/conda prefix; None for kind "system"
    python: str | None         # venv: base interpreter; conda: version; system: interpreter path
    packages: tuple[str, ...] | None
    declared: bool = True      # False when implied by a model's env = "..." default
    extras: tuple[str, ...] = ()      # from ENV_EXTRAS, e.g. ("flash-attn",)
    pip_args: tuple[str, ...] = ()    # added to every `pip install` of this env (index URLs, --no-index ...)

    @property
    def interpreter(self) -> str:
        """The interpreter that programs in this env run with."""
        if self.kind == "system":
            return self.python or "python3"
        assert self.path is not None
        return str(self.path / "bin" / "python")


@dataclass(frozen=True)
class Controller:
    host: str
    port: int
    enabled: bool


@dataclass(frozen=True)
class Api:
    kind: str
    host: str
    port: int
    api_keys: tuple[str, ...]   # specs as written: literal, env:VAR, file:PATH (resolved at run time)
    env: str                    # runtime env for kind fastchat/fastchat-tools


@dataclass(frozen=True)
class Model:
    index: int
    name: str
    program: str                # supervisord program name
    path: Path | str            # a local path (absolute) or a hub id kept as written
    engine: str
    task: str
    gpus: tuple[int, ...] | None   # None: not pinned (CUDA_VISIBLE_DEVICES left alone); (): CPU
    tensor_parallel: int
    pipeline_parallel: int
    distributed_backend: str | None
    host: str
    port: int
    tool_call_parser: str | None
    reasoning_parser: str | None
    prefix_caching: bool | None
    max_model_len: int | None
    gpu_memory_utilization: float | None
    dtype: str | None
    env: str
    args: tuple[str, ...]
    environment: Mapping[str, str] = field(default_factory=frozen_mapping)
    explicit: frozenset[str] = frozenset()   # keys the stack file set, where defaults need telling apart

    @property
    def on_cpu(self) -> bool:
        """True when pinned to no GPU (gpus = []); None (not pinned) means the engine sees every GPU."""
        return self.gpus == ()

    @property
    def url(self) -> str:
        """Where baremetal (gateway, probes) reaches this model's server."""
        return f"http://{connect_host(self.host)}:{self.port}"


@dataclass(frozen=True)
class Serves:
    model: str
    task: str
    url: str


@dataclass(frozen=True)
class Program:
    index: int
    name: str
    command: tuple[str, ...]
    health: str | None
    serves: Serves | None
    port: int | None            # declared, or read from serves.url / health on this host
    gpus: tuple[int, ...] | None
    directory: Path | None
    startsecs: int
    stopwaitsecs: int
    stopsignal: str
    environment: Mapping[str, str] = field(default_factory=frozen_mapping)


@dataclass(frozen=True)
class Watchdog:
    """[watchdog]: what counts as stuck, and how hard to try restarting. README explains each option."""

    enabled: bool
    interval_s: float
    probe_timeout_s: float
    unhealthy_after: int
    stall_after_s: float
    busy_stall_after_s: float
    load_timeout_s: float
    max_restarts: int
    restart_window_s: float
    restart_backoff_s: float
    kill_after_s: float
    canary: bool
    gpu_temp_limit_c: int
    metrics_host: str
    metrics_port: int


@dataclass(frozen=True)
class Stack:
    """One node's serving stack, validated, with every default filled in."""

    source: Path                # the stack file, absolute
    stack: StackInfo
    envs: Mapping[str, Env]
    controller: Controller
    api: Api
    models: tuple[Model, ...]
    programs: tuple[Program, ...]
    watchdog: Watchdog
    warnings: tuple = ()        # Issue objects: legal but probably not what was meant

    @property
    def root(self) -> Path:
        return self.stack.root

    @property
    def supervisor_dir(self) -> Path:
        return self.root / "supervisor"

    @property
    def supervisord_conf(self) -> Path:
        return self.supervisor_dir / "supervisord.conf"

    @property
    def socket_path(self) -> Path:
        return self.root / "run" / "supervisor.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "run" / "supervisord.pid"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def model(self, name: str) -> Model | None:
        return next((m for m in self.models if m.name == name), None)

    def uses_fastchat(self) -> bool:
        return any(m.engine in FASTCHAT_ENGINES for m in self.models) or self.api.kind in ("fastchat", "fastchat-tools")
