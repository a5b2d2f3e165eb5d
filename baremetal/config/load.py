"""The one reader of stack files: TOML text -> validated Stack, or a ConfigError listing every issue."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from baremetal.config import checks
from baremetal.config import cluster as clusters
from baremetal.config import types as t
from baremetal.config.fields import LineIndex, Problems, Table, control_characters
from baremetal.config.named_keys import read_named_keys
from baremetal.config.model import (API_KINDS, DISTRIBUTED_BACKENDS, ENGINES, ENV_EXTRAS, ENV_KINDS, TASKS, Api,
                                    Cluster, Controller, Env, Model, Program, Serves, Stack, StackInfo, Watchdog,
                                    connect_host, frozen_mapping)
from baremetal.engines.overrides import follow_args
from baremetal.errors import ConfigError, Issue

DEFAULT_CONFIG = "baremetal.toml"
STACK_FILE_MAX_BYTES = 4 * 2**20
CONFIG_ENV_VAR = "BAREMETAL_CONFIG"
DEFAULT_ENV_FOR_ENGINE = {"vllm": "default", "fastchat": "fastchat", "fastchat-vllm": "fastchat-vllm"}
SIGNALS = ("TERM", "INT", "QUIT", "KILL", "HUP", "USR1", "USR2")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
# The shortest durations that make sense (README, "[watchdog]"): a watchdog ticking every 0.1 ms spins a core,
# probes that time out at once fail healthy programs, and a restart budget over a 1 s window is no budget.
WATCHDOG_FLOORS_S = {"interval": 0.05, "probe_timeout": 0.1, "stall_after": 1.0, "busy_stall_after": 1.0,
                     "load_timeout": 1.0, "restart_window": 60.0, "restart_backoff": 0.0, "kill_after": 0.1,
                     "start_stall_after": 1.0, "idle_probe_interval": 1.0}


def resolve_config_path(option: str | os.PathLike | None) -> Path:
    """The stack file to use: the -c option, else $BAREMETAL_CONFIG, else ./baremetal.toml."""
    chosen = option or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG
    return Path(chosen).expanduser().absolute()


def load_stack(path: str | os.PathLike, node: str | clusters.NodeChoice | None = None) -> Stack:
    """Read and validate the stack file at `path`, for this machine's node of a cluster (`node`, else
    $BAREMETAL_NODE, else the node whose address is on this machine)."""
    file = Path(path).expanduser().absolute()
    try:
        with file.open("rb") as stream:
            data = stream.read(STACK_FILE_MAX_BYTES + 1)     # /dev/zero or a huge file: never read it all
        if len(data) > STACK_FILE_MAX_BYTES:
            raise ConfigError(file, [Issue("", f"is over {STACK_FILE_MAX_BYTES // 2**20} MiB: not a stack file "
                                           "(point -c at the TOML file that describes the stack)")])
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(file, [Issue("", "no such stack file; create one with `baremetal init` "
                                       "or point -c/--config (or $BAREMETAL_CONFIG) at it")]) from None
    except IsADirectoryError:
        raise ConfigError(file, [Issue("", "is a folder; point -c at the stack file in it")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(file, [Issue("", f"cannot read the stack file: {error}")]) from None
    return parse_stack(text, file, node if isinstance(node, clusters.NodeChoice) else clusters.node_choice(node))


def parse_stack(text: str, file: Path, node: clusters.NodeChoice | str | None = None) -> Stack:
    """Validate a stack file's text; relative paths resolve against `file`'s folder. `node` says which node of
    a [cluster] this is (a name, or a NodeChoice with this machine's addresses); single-node stacks ignore it."""
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(file, [Issue("", "arrays or inline tables are nested too deeply to read; a stack file "
                                       "needs a few levels at most")]) from None
    except tomllib.TOMLDecodeError as error:
        position = _TOML_POSITION.search(str(error))
        line = int(position.group(1)) if position else None
        message = _TOML_POSITION.sub("", str(error)).strip()
        raise ConfigError(file, [Issue("", f"TOML syntax error: {message}"
                                       + (f" (column {position.group(2)})" if position else ""), line)]) from None
    problems = Problems(LineIndex(text))
    for path, message in control_characters(data):
        problems.refuse(path, message)
    choice = clusters.NodeChoice(node, "node") if isinstance(node, str) else node
    reader = _Reader(data, file, problems, choice)
    stack = reader.read()
    if reader.unchosen and len(problems.issues) == 1:
        raise clusters.NodeUnknownError(file, problems.issues, reader.unchosen)
    if problems.issues:
        raise ConfigError(file, problems.issues)
    return stack


class _Reader:
    def __init__(self, data: dict[str, Any], file: Path, problems: Problems, choice: clusters.NodeChoice | None):
        self.file = file
        self.base = file.parent
        self.problems = problems
        self.top = Table(data, "", problems)
        self.choice = choice
        self.cluster: Cluster | None = None
        self.unchosen: list[str] = []           # the nodes, when this machine could not be told which

    def read(self) -> Stack:
        info = self.read_stack_info()
        self.cluster = self.read_cluster(info)
        if self.cluster:
            info = dataclasses.replace(info, root=self.cluster.local_node.root)
        watchdog = self.read_watchdog()
        env_tables = self.top.take("env", _table_of_tables, {})
        models = [self.read_model(i, raw, info) for i, raw in enumerate(self.top.take("model", _array_of_tables, []))]
        programs = [self.read_program(i, raw) for i, raw in enumerate(self.top.take("program", _array_of_tables, []))]
        uses_fastchat = any(m.engine in ("fastchat", "fastchat-vllm") for m in models)
        api = self.read_api()
        controller = self.read_controller(uses_fastchat or api.kind in ("fastchat", "fastchat-tools"), models)
        if self.cluster and not self.cluster.env:
            ray_model = next((m for m in models if m.uses_ray), None)
            self.cluster = dataclasses.replace(self.cluster, env=ray_model.env if ray_model else clusters.DEFAULT_RAY_ENV)
        envs = self.read_envs(env_tables, info, models, api)
        self.top.finish()
        models = checks.assign_ports(models, programs, api, controller, watchdog)
        stack = Stack(source=self.file, stack=info, envs=frozen_mapping(envs), controller=controller, api=api,
                      models=tuple(models), programs=tuple(programs), watchdog=watchdog, cluster=self.cluster)
        checks.check_stack(stack, self.problems)
        return dataclasses.replace(stack, warnings=tuple(self.problems.warnings))

    # -- [cluster] -----------------------------------------------------------------------------
    def read_cluster(self, info: StackInfo) -> Cluster | None:
        if not self.top.has("cluster"):
            self.top.take("cluster", lambda v: v)
            if self.choice and self.choice.name and self.choice.source == "--node":
                self.problems.add("cluster", f"--node {self.choice.name} was given, but this stack file has no "
                                  "[cluster] section: it describes a single node")
            return None
        raw = self.top.take("cluster", lambda v: v, {})
        cluster, self.unchosen = clusters.read_cluster(raw, self.problems, self.base, info.root, self.choice,
                                                       self._path)
        return cluster

    def _node(self, table: Table, path: str) -> str | None:
        """The `node` key of a model or program: a [[cluster.node]] name, the head by default."""
        name = table.take("node", t.nonempty_string)
        if self.cluster is None:
            if name is not None and not self.top.has("cluster"):
                self.problems.add(f"{path}.node", "places this on a cluster node, but there is no [cluster] section")
            return None
        names = [n.name for n in self.cluster.nodes]
        if name is not None and name not in names:
            self.problems.add(f"{path}.node", f"no [[cluster.node]] is named {name!r}{_did_you_mean(name, names)}")
            return self.cluster.head.name
        return name or self.cluster.head.name

    # -- [stack] -----------------------------------------------------------------------------
    def read_stack_info(self) -> StackInfo:
        table = Table(self.top.take("stack", lambda v: v, {}), "stack", self.problems)
        if not self.top.has("stack"):
            self.problems.add("stack", 'is required: add a [stack] table with at least name = "..."')
        name = table.take("name", t.name, "baremetal", required=self.top.has("stack"))
        root = table.take("root", t.nonempty_string, ".")
        models_dir = table.take("models_dir", t.nonempty_string)
        timezone = table.take("timezone", t.timezone)
        environment = table.take("environment", t.environment, {})
        spare_gpus = table.take("spare_gpus", t.gpu_list, ())
        user = table.take("user", t.system_user)
        table.finish()
        info = StackInfo(name=name, root=self._path(root), models_dir=self._path(models_dir) if models_dir else None,
                         timezone=timezone, environment=frozen_mapping(environment), spare_gpus=spare_gpus, user=user)
        problem = checks.root_problem(info.root)
        if problem:
            default = "" if table.has("root") else f" (the root defaults to the stack file's folder, {info.root})"
            self.problems.add("stack.root", problem + default)
        return info

    def _path(self, text: str, base: Path | None = None) -> Path:
        path = Path(text).expanduser()
        return Path(os.path.normpath((base or self.base) / path)) if not path.is_absolute() else path

    # -- [env.*] -------------------------------------------------------------------------------
    def read_envs(self, tables: dict, info: StackInfo, models: list[Model], api: Api) -> dict[str, Env]:
        envs: dict[str, Env] = {}
        for name, raw in tables.items():
            path = f"env.{name}"
            if not t.NAME.match(name):
                self.problems.add(path, "env names use letters, digits, '.', '_' and '-'")
            table = Table(raw, path, self.problems)
            kind = table.take("kind", t.choice(*ENV_KINDS), "venv")
            where = table.take("path", t.nonempty_string)
            python = table.take("python", t.nonempty_string)
            packages = table.take("packages", t.string_list)
            extras = table.take("extras", _extras, ())
            pip_args = table.take("pip_args", t.string_list, ())
            table.finish()
            if kind == "system":
                for key in ("packages", "extras", "pip_args"):
                    if table.has(key):
                        self.problems.warn(f"{path}.{key}", 'ignored by `baremetal install`: kind "system" uses an '
                                           "existing interpreter as it is")
            if kind == "system":
                if where is not None:
                    self.problems.add(f"{path}.path", 'kind "system" uses an existing interpreter: set python = '
                                      '"/path/to/python" instead of path')
                prefix = None
                python = str(self._path(python)) if python and "/" in python else (python or "python3")
            else:
                prefix = self._path(where or f"envs/{name}", info.root)
            envs[name] = Env(name=name, kind=kind, path=prefix, python=python,
                             packages=tuple(packages) if packages is not None else None,
                             extras=extras, pip_args=pip_args)
        wanted = [(f"model[{m.index}].env", m.env) for m in models]
        if api.kind in ("fastchat", "fastchat-tools"):
            wanted.append(("api.env", api.env))
        if self.cluster:
            wanted.append(("cluster.env", self.cluster.env))
        for path, name in wanted:
            if name in envs:
                continue
            if name in DEFAULT_ENV_FOR_ENGINE.values():
                envs[name] = Env(name=name, kind="venv", path=info.root / "envs" / name, python=None,
                                 packages=None, declared=False)
            elif name == clusters.DEFAULT_RAY_ENV and self.cluster:
                envs[name] = Env(name=name, kind="venv", path=info.root / "envs" / name, python=None,
                                 packages=(f"ray=={clusters.RAY_VERSION}",), declared=False)
            else:
                self.problems.add(path, f"no [env.{name}] in this file{_did_you_mean(name, envs)}")
        return envs

    # -- [controller] [api] [watchdog] -------------------------------------------------------------
    def read_controller(self, implied: bool, models: list[Model]) -> Controller:
        table = Table(self.top.take("controller", lambda v: v, {}), "controller", self.problems)
        # FastChat workers on other nodes register with the controller: it listens on the head's cluster address.
        remote_workers = self.cluster and any(m.engine in ("fastchat", "fastchat-vllm") and
                                              m.node != self.cluster.head.name for m in models)
        host = table.take("host", t.nonempty_string, self.cluster.head.address if remote_workers else "127.0.0.1")
        port = table.take("port", t.port, 21001)
        enabled = table.take("enabled", t.boolean, implied)
        table.finish()
        return Controller(host=host, port=port, enabled=enabled)

    def read_api(self) -> Api:
        table = Table(self.top.take("api", lambda v: v, {}), "api", self.problems)
        kind = table.take("kind", t.choice(*API_KINDS), "gateway")
        host = table.take("host", t.nonempty_string, "127.0.0.1")
        port = table.take("port", t.port, 8000)
        keys = table.take("api_keys", t.string_list, ())
        env = table.take("env", t.name, "fastchat")
        limits = dict(client_timeout_s=table.take("client_timeout", t.duration_at_least(0.1), 10.0),
                      max_connections=table.take("max_connections", t.integer(1, 1_000_000), 4096),
                      backend_connect_timeout_s=table.take("backend_connect_timeout", t.duration_at_least(0.1), 5.0),
                      backend_idle_timeout_s=table.take("backend_idle_timeout", t.duration_at_least(1.0), 600.0))
        named = read_named_keys(table.take("key", lambda v: v, None), self.problems, checks.key_spec_problem)
        workers = table.take("workers", t.integer(1, 64), 1)
        drain_timeout_s = table.take("drain_timeout", t.duration_s, 30.0)
        hold_timeout_s = table.take("hold_timeout", t.duration_s, 120.0)
        migration_limit = table.take("migration_limit", t.integer(0, 100), 2)
        table.finish()
        for index, spec in enumerate(keys):
            problem = checks.key_spec_problem(spec)
            if problem:
                self.problems.add(f"api.api_keys[{index}]", problem)
        return Api(kind=kind, host=host, port=port, api_keys=keys, env=env, named_keys=named, workers=workers,
                   drain_timeout_s=drain_timeout_s, hold_timeout_s=hold_timeout_s, migration_limit=migration_limit,
                   **limits)

    def read_watchdog(self) -> Watchdog:
        # Defaults measured with scripts/bench_watchdog.py: a frozen engine is caught in about 3-4 s,
        # while a busy engine (counters moving) or a compiling one (CPU busy) is left alone.
        table = Table(self.top.take("watchdog", lambda v: v, {}), "watchdog", self.problems)
        floor = lambda key: t.duration_at_least(WATCHDOG_FLOORS_S[key])  # noqa: E731
        watchdog = Watchdog(
            enabled=table.take("enabled", t.boolean, True),
            interval_s=table.take("interval", floor("interval"), 1.0),
            probe_timeout_s=table.take("probe_timeout", floor("probe_timeout"), 1.0),
            unhealthy_after=table.take("unhealthy_after", t.integer(1, 1000), 3),
            stall_after_s=table.take("stall_after", floor("stall_after"), 3.0),
            busy_stall_after_s=table.take("busy_stall_after", floor("busy_stall_after"), 60.0),
            load_timeout_s=table.take("load_timeout", floor("load_timeout"), 1800.0),
            max_restarts=table.take("max_restarts", t.integer(0, 10000), 5),
            restart_window_s=table.take("restart_window", floor("restart_window"), 3600.0),
            restart_backoff_s=table.take("restart_backoff", floor("restart_backoff"), 10.0),
            kill_after_s=table.take("kill_after", floor("kill_after"), 5.0),
            canary=table.take("canary", t.boolean, True),
            gpu_temp_limit_c=table.take("gpu_temp_limit", t.integer(30, 130), 90),
            metrics_host=table.take("metrics_host", t.nonempty_string, "127.0.0.1"),
            metrics_port=table.take("metrics_port", t.port, 9400),
            start_stall_after_s=table.take("start_stall_after", floor("start_stall_after"), 300.0),
            gpu_reset=table.take("gpu_reset", t.boolean, False),
            evidence_keep=table.take("evidence_keep", t.integer(1, 10000), 20),
            idle_probe_interval_s=table.take("idle_probe_interval", floor("idle_probe_interval"), 30.0),
        )
        table.finish()
        if watchdog.busy_stall_after_s < watchdog.stall_after_s:
            self.problems.add("watchdog.busy_stall_after", f"must be at least stall_after "
                              f"({watchdog.stall_after_s:g}s): it is the longer limit, for engines that compute")
        return watchdog

    # -- [[model]] -----------------------------------------------------------------------------
    def read_model(self, index: int, raw: Any, info: StackInfo) -> Model:
        path = f"model[{index}]"
        table = Table(raw, path, self.problems)
        name = table.take("name", t.nonempty_string, f"model-{index}", required=True)
        model_path = table.take("path", t.nonempty_string, "", required=True)
        engine = table.take("engine", t.choice(*ENGINES), "vllm")
        task = table.take("task", t.choice(*TASKS), "chat")
        gpus = table.take("gpus", t.gpu_list)
        default_parallel = max(len(gpus), 1) if gpus is not None else 1
        tensor_parallel = table.take("tensor_parallel", t.integer(1, 1024), None)
        pipeline_parallel = table.take("pipeline_parallel", t.integer(1, 1024), None)
        program = table.take("program", t.name, None)
        node = self._node(table, path)
        remote = self.cluster is not None and node != self.cluster.head.name
        # A model on another node than the head is reached over the cluster network: it binds its node's address.
        host = table.take("host", t.nonempty_string, self.cluster.node(node).address if remote else "127.0.0.1")
        model = Model(
            index=index, name=name,
            program=program or f"{engine}-{t.slug(name)}",
            path=self._model_path(model_path, info),
            engine=engine, task=task, gpus=gpus,
            tensor_parallel=tensor_parallel or (default_parallel // (pipeline_parallel or 1) or 1),
            pipeline_parallel=pipeline_parallel or 1,
            distributed_backend=table.take("distributed_backend", t.choice(*DISTRIBUTED_BACKENDS)),
            host=host,
            port=table.take("port", t.port, 0),
            tool_call_parser=table.take("tool_call_parser", t.nonempty_string),
            reasoning_parser=table.take("reasoning_parser", t.nonempty_string),
            prefix_caching=table.take("prefix_caching", t.boolean),
            max_model_len=table.take("max_model_len", t.integer(1, None)),
            gpu_memory_utilization=table.take("gpu_memory_utilization", t.number(0.01, 1.0)),
            dtype=table.take("dtype", t.nonempty_string),
            env=table.take("env", t.name, DEFAULT_ENV_FOR_ENGINE[engine]),
            args=table.take("args", t.string_list, ()),
            environment=frozen_mapping(table.take("environment", t.environment, {})),
            explicit=frozenset(key for key in ("tensor_parallel", "pipeline_parallel", "program", "gpus")
                               if table.has(key)),
            node=node,
            advertise=self.cluster.node(node).address if remote and connect_host(host) != host else None,
        )
        table.finish()
        return follow_args(model, path, self.problems.add, self.problems.warn)

    def _model_path(self, text: str, info: StackInfo) -> Path:
        if not text:
            return Path()
        path = Path(text).expanduser()
        if path.is_absolute():
            return path
        return self._path(text, info.models_dir) if info.models_dir else self._path(text)

    # -- [[program]] ---------------------------------------------------------------------------
    def read_program(self, index: int, raw: Any) -> Program:
        path = f"program[{index}]"
        table = Table(raw, path, self.problems)
        name = table.take("name", t.name, f"program-{index}", required=True)
        command = table.take("command", t.command, (), required=True)
        health = table.take("health", t.url)
        serves = table.take("serves", lambda v: v)
        port = table.take("port", t.port)
        directory = table.take("directory", t.supervisor_value)
        program = Program(
            index=index, name=name, command=command, health=health,
            serves=self._serves(serves, f"{path}.serves") if serves is not None else None,
            port=port if port is not None else (_url_port(serves.get("url")) if isinstance(serves, dict) else None)
            or _url_port(health),
            gpus=table.take("gpus", t.gpu_list),
            directory=self._path(directory) if directory else None,
            startsecs=table.take("startsecs", t.integer(0, 3600), 3),
            stopwaitsecs=table.take("stopwaitsecs", t.integer(1, 3600), 10),
            stopsignal=table.take("stopsignal", t.choice(*SIGNALS), "TERM"),
            environment=frozen_mapping(table.take("environment", t.environment, {})),
            node=self._node(table, path),
            ray_gpus=table.take("ray_gpus", t.integer(0, 100000)),
        )
        table.finish()
        if program.ray_gpus is not None and self.cluster is None and self.top.has("cluster") is False:
            self.problems.add(f"{path}.ray_gpus", "waits for GPUs of a Ray cluster, but there is no [cluster] section")
        return program

    def _serves(self, raw: Any, path: str) -> Serves | None:
        table = Table(raw, path, self.problems)
        serves = Serves(model=table.take("model", t.nonempty_string, "", required=True),
                        task=table.take("task", t.choice(*TASKS), "chat"),
                        url=table.take("url", t.url, "", required=True))
        table.finish()
        return serves


def _extras(value: Any) -> tuple[str, ...]:
    items = t.string_list(value)
    for item in items:
        if item not in ENV_EXTRAS:
            raise t.FieldError(f"unknown extra {item!r}; known extras: {', '.join(ENV_EXTRAS)} "
                               "(anything else goes in packages)")
    return tuple(dict.fromkeys(items))


def _url_port(url: Any) -> int | None:
    if not isinstance(url, str):
        return None
    match = re.match(r"https?://(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\]):(\d+)", url)
    return int(match.group(1)) if match else None


def _table_of_tables(value: Any) -> dict:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise t.FieldError("expected tables such as [env.default]")
    return value


def _array_of_tables(value: Any) -> list:
    if not isinstance(value, list):
        raise t.FieldError("expected an array of tables: write each entry as [[model]] or [[program]]")
    return value


def _did_you_mean(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else "; add it, or use one of the envs defined"
