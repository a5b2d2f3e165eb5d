"""The stack file as frozen dataclasses. Defaults are filled in by the reader, so nothing downstream
looks at raw TOML. Paths are absolute; durations are seconds (`*_s`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Mapping, get_args

Engine = Literal["vllm", "fastchat", "fastchat-vllm"]
Task = Literal["chat", "embed", "rerank"]
EnvKind = Literal["venv", "conda", "system"]
ApiKind = Literal["gateway", "fastchat", "fastchat-tools", "none"]
DistributedBackend = Literal["mp", "ray"]
NodeRole = Literal["head", "worker"]

ENGINES: tuple[str, ...] = get_args(Engine)
FASTCHAT_ENGINES = ("fastchat", "fastchat-vllm")
TASKS: tuple[str, ...] = get_args(Task)
ENV_KINDS: tuple[str, ...] = get_args(EnvKind)
ENV_EXTRAS = ("flash-attn",)     # opt-in additions that `baremetal install` knows how to build
API_KINDS: tuple[str, ...] = get_args(ApiKind)
DISTRIBUTED_BACKENDS: tuple[str, ...] = get_args(DistributedBackend)
CLUSTER_ROLES: tuple[str, ...] = get_args(NodeRole)


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
    spare_gpus: tuple[int, ...] = ()   # where programs pinned to a cordoned GPU are re-placed
    user: str | None = None     # the system user supervisord and every program run as (None: whoever starts it)


@dataclass(frozen=True)
class Env:
    """A named runtime environment. `packages` is None when the stack leaves them to the engines."""

    name: str
    kind: EnvKind
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
class ApiKey:
    """One [[api.key]]: a key (or a file of keys) with a name, the models it may use, and its limits."""

    name: str                             # shown in metrics and logs; the key itself never is
    key: str                              # spec as written: literal, env:VAR, file:PATH
    models: tuple[str, ...] | None = None   # None: every model of the node
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None    # prompt + completion, as the engine reports them
    max_concurrent: int | None = None


@dataclass(frozen=True)
class Api:
    kind: ApiKind
    host: str
    port: int
    api_keys: tuple[str, ...]   # specs as written: literal, env:VAR, file:PATH (resolved at run time)
    env: str                    # runtime env for kind fastchat/fastchat-tools
    # The gateway's time limits (README, "Time limits"): a client's request must arrive within
    # client_timeout_s (slowloris); at most max_connections are open; a backend must accept the
    # connection within backend_connect_timeout_s and may go silent for at most backend_idle_timeout_s.
    client_timeout_s: float = 10.0
    max_connections: int = 4096
    backend_connect_timeout_s: float = 5.0
    backend_idle_timeout_s: float = 600.0
    named_keys: tuple[ApiKey, ...] = ()   # [[api.key]] tables, next to the unnamed api_keys
    workers: int = 1            # gateway processes sharing the port (SO_REUSEPORT)
    drain_timeout_s: float = 30.0   # planned stops wait this long for requests in flight (0: no drain)
    hold_timeout_s: float = 120.0   # how long a request may wait for a replica of its model (0: no holding)
    migration_limit: int = 2        # re-sends of one request to another (or a restarted) replica

    @property
    def key_specs(self) -> tuple[str, ...]:
        """Every key spec of the endpoint: api_keys, then each [[api.key]]'s."""
        return self.api_keys + tuple(entry.key for entry in self.named_keys)


@dataclass(frozen=True)
class Model:
    index: int
    name: str
    program: str                # supervisord program name
    path: Path | str            # a local path (absolute) or a hub id kept as written
    engine: Engine
    task: Task
    gpus: tuple[int, ...] | None   # None: not pinned (CUDA_VISIBLE_DEVICES left alone); (): CPU
    tensor_parallel: int
    pipeline_parallel: int
    distributed_backend: DistributedBackend | None
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
    node: str | None = None     # cluster node that runs it (None: not a cluster)
    advertise: str | None = None   # host others reach it at, when not connect_host(host) (a remote node)

    @property
    def on_cpu(self) -> bool:
        """True when pinned to no GPU (gpus = []); None (not pinned) means the engine sees every GPU."""
        return self.gpus == ()

    @property
    def url(self) -> str:
        """Where baremetal (gateway, probes) reaches this model's server, from any node of a cluster."""
        return f"http://{self.advertise or connect_host(self.host)}:{self.port}"

    @property
    def uses_ray(self) -> bool:
        """True for vLLM models on Ray's executor, which in a cluster span the nodes' GPUs."""
        return self.engine == "vllm" and self.distributed_backend == "ray"

    @property
    def world_size(self) -> int:
        """GPUs the model needs in all: tensor_parallel x pipeline_parallel."""
        return self.tensor_parallel * self.pipeline_parallel


@dataclass(frozen=True)
class Serves:
    model: str
    task: Task
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
    node: str | None = None     # cluster node that runs it (None: not a cluster)
    ray_gpus: int | None = None   # a Ray driver: start once the cluster has this many GPUs free


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
    start_stall_after_s: float = 300.0   # loading with no sign of progress this long: restarted
    gpu_reset: bool = False              # may `nvidia-smi -r` a cordoned GPU that nothing else uses
    evidence_keep: int = 20              # evidence folders kept under <root>/evidence
    idle_probe_interval_s: float = 30.0  # a canary only for an engine nothing has used for this long


@dataclass(frozen=True)
class RayPorts:
    """Every port Ray listens on, pinned so that a firewall can be written (Ray picks random ones otherwise)."""

    gcs: int = 6379
    client_server: int = 10001          # only when ray[client] is installed; Ray starts no client server otherwise
    node_manager: int = 6800
    object_manager: int = 6801
    runtime_env_agent: int = 6802
    dashboard_agent_grpc: int = 6803
    metrics_export: int = 6804
    dashboard_agent_http: int = 52365
    dashboard: int = 8265               # only when [cluster] dashboard = true
    min_worker: int = 10002
    max_worker: int = 10999

    def named(self) -> dict[str, int]:
        """Port by key, as written in [cluster.ports]."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ClusterNode:
    name: str
    address: str                 # this node's IP on the cluster network
    role: NodeRole
    root: Path                   # the stack root on this node
    interface: str | None        # NIC holding `address`, for NCCL/gloo (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME)
    gpus: tuple[int, ...] | None   # GPUs Ray may use here (CUDA_VISIBLE_DEVICES of the Ray node); None: all
    num_cpus: int | None         # CPUs Ray offers here; None: detected

    @property
    def is_head(self) -> bool:
        return self.role == "head"


@dataclass(frozen=True)
class Cluster:
    """Several nodes, one stack file: Ray joins them; `local` is the node this stack was loaded for."""

    nodes: tuple[ClusterNode, ...]
    local: str
    env: str                     # runtime env that runs Ray on every node (and the models that use Ray)
    token_file: Path             # Ray's auth token, the same file on every node (mode 0600)
    ports: RayPorts
    dashboard: bool
    dashboard_host: str
    object_store_memory_bytes: int
    temp_dir: Path               # Ray's session folder on the local node (its sockets live there)
    lost_after_s: float          # Ray marks a silent node dead after about this long
    execute_model_timeout_s: float   # VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS for models on Ray

    @property
    def head(self) -> ClusterNode:
        return next(n for n in self.nodes if n.is_head)

    @property
    def local_node(self) -> ClusterNode:
        return self.node(self.local)

    def node(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name == name)

    @property
    def gcs_address(self) -> str:
        """host:port of Ray's GCS on the head, what `ray start --address` and RAY_ADDRESS take."""
        return f"{self.head.address}:{self.ports.gcs}"


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
    cluster: Cluster | None = None   # None: a single-node stack

    @property
    def is_head(self) -> bool:
        """True on the node that runs the controller, the API and the cluster's watch (any single node)."""
        return self.cluster is None or self.cluster.local_node.is_head

    def runs_here(self, entry: Model | Program) -> bool:
        """Whether a model or program runs on the node this stack was loaded for."""
        return self.cluster is None or entry.node == self.cluster.local

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
    def run_dir(self) -> Path:
        """<root>/run: the socket, the pidfile and the state files the programs share (mode 0700)."""
        return self.root / "run"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "supervisord.pid"

    @property
    def watchdog_state_path(self) -> Path:
        """The watchdog's state file (watchdog.state_file), read by the gateway and `status`."""
        return self.run_dir / "watchdog.json"

    @property
    def gateway_state_path(self) -> Path:
        """The gateway's witness file: requests in flight per backend (stack.gateway_view reads it)."""
        return self.run_dir / "gateway.json"

    @property
    def drain_path(self) -> Path:
        """Programs taken out of routing for a planned stop, and the CLI's changes (stack.drain)."""
        return self.run_dir / "drain.json"

    @property
    def membership_path(self) -> Path:
        """Where a cluster head's ray-monitor writes Ray's view of the nodes."""
        return self.run_dir / "cluster.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def model(self, name: str) -> Model | None:
        return next((m for m in self.models if m.name == name), None)

    def uses_fastchat(self) -> bool:
        return any(m.engine in FASTCHAT_ENGINES for m in self.models) or self.api.kind in ("fastchat", "fastchat-tools")
