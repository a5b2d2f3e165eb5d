"""Checks that span fields (names, ports, GPUs, engine/task fit), and stable default ports."""

from __future__ import annotations

import dataclasses
import zlib
from collections import defaultdict

from baremetal.config.fields import Problems
from baremetal.config.named_keys import check_named_keys
from baremetal.config.model import FASTCHAT_ENGINES, Api, Controller, Model, Program, Stack, Watchdog

RESERVED_PROGRAMS = ("controller", "api", "watchdog")
CLUSTER_PROGRAMS = ("ray-head", "ray-worker", "ray-monitor")
# Names supervisord (or supervisorctl) already gives a meaning to.
SUPERVISORD_NAMES = {
    "supervisord": "supervisord's own log is logs/supervisord.log (and `baremetal logs supervisord` shows it)",
    "all": "supervisorctl reads `start all`, `stop all` as every program",
}
PROGRAM_NAME_MAX = 128      # its log files (NAME.err.log.5) and atomic-write temporaries must fit in 255 bytes
MODEL_PORT_RANGE = range(8001, 9000)
UNIX_SOCKET_PATH_MAX = 107          # sun_path is 108 bytes with its terminating NUL
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
# Options that only vLLM understands, and options that only mean something for chat models.
VLLM_ONLY = ("distributed_backend", "reasoning_parser", "prefix_caching", "gpu_memory_utilization")
CHAT_ONLY = ("tool_call_parser", "reasoning_parser")


def key_spec_problem(spec: str) -> str | None:
    """What is wrong with an api_keys entry (literal, env:VAR or file:PATH), or None."""
    if not spec:
        return "an empty key would let anyone in"
    for prefix in ("env:", "file:"):
        if spec.startswith(prefix) and not spec[len(prefix):]:
            return f"{prefix} needs a name after it, e.g. {prefix}{'BAREMETAL_API_KEY' if prefix == 'env:' else '/etc/baremetal/api-key'}"
    return None


def root_problem(root) -> str | None:
    """Why the stack's root cannot reach supervisord's files (its log, socket and pidfile paths, the
    variables under it such as TMPDIR), or None."""
    from baremetal.supervisord.syntax import environment_value_problem, value_problem

    return value_problem(f"{root}/logs/supervisord.log") or environment_value_problem(f"{root}/tmp")


def assign_ports(models: list[Model], programs: list[Program], api: Api, controller: Controller,
                 watchdog: Watchdog) -> list[Model]:
    """Give each model without a port one from 8001-8999, chosen by a hash of its program name.

    A hash (not declaration order) keeps every model's port when another model is added or removed;
    the rare collision is settled by probing upward, in program-name order, so it is deterministic.
    """
    taken = {api.port, watchdog.metrics_port} | {m.port for m in models if m.port}
    taken |= {p.port for p in programs if p.port}
    if controller.enabled:
        taken.add(controller.port)
    assigned: dict[int, int] = {}
    span = len(MODEL_PORT_RANGE)
    for model in sorted((m for m in models if not m.port), key=lambda m: (m.program, m.index)):
        offset = zlib.crc32(model.program.encode()) % span
        for step in range(span):
            port = MODEL_PORT_RANGE[(offset + step) % span]
            if port not in taken:
                break
        taken.add(port)
        assigned[model.index] = port
    return [dataclasses.replace(m, port=assigned[m.index]) if m.index in assigned else m for m in models]


def check_stack(stack: Stack, problems: Problems) -> None:
    """Record every cross-field problem of a parsed stack."""
    _check_names(stack, problems)
    _check_ports(stack, problems)
    for model in stack.models:
        _check_model(model, problems)
    _check_shared_gpus(stack, problems)
    _check_routes(stack, problems)
    if stack.cluster:
        from baremetal.config.cluster_checks import check_cluster

        check_cluster(stack, problems)
    socket = str(stack.socket_path)
    if len(socket.encode()) > UNIX_SOCKET_PATH_MAX:
        problems.add("stack.root", f"the supervisord socket {socket} would be {len(socket.encode())} bytes long, "
                     f"over the {UNIX_SOCKET_PATH_MAX}-byte limit of unix sockets; choose a shorter root")
    check_named_keys(stack, problems)
    if stack.api.kind != "none" and stack.api.host not in ("127.0.0.1", "localhost", "::1") and not stack.api.key_specs:
        problems.warn("api.api_keys", f"the API listens on {stack.api.host} with no key: anyone who can reach "
                      "the port can use it; add api_keys = [\"env:BAREMETAL_API_KEY\"]")


def _check_names(stack: Stack, problems: Problems) -> None:
    by_name: dict[str, list[Model]] = defaultdict(list)
    for model in stack.models:
        by_name[model.name].append(model)
    for name, group in by_name.items():
        if len(group) > 1 and not all("program" in m.explicit for m in group):
            for model in group[1:]:
                problems.add(f"model[{model.index}].name", f"{name!r} is already the name of model[{group[0].index}]; "
                             "to run replicas of one model, give each a distinct program = \"...\"")
        tasks = {m.task for m in group}
        if len(tasks) > 1:
            problems.add(f"model[{group[-1].index}].task", f"replicas of {name!r} must share one task, got {sorted(tasks)}")
    builtins = RESERVED_PROGRAMS + (CLUSTER_PROGRAMS if stack.cluster else ())
    owners: dict[str, str] = {name: f"the built-in {name} program" for name in builtins}
    owners |= {name: f"supervisord itself: {why}" for name, why in SUPERVISORD_NAMES.items()}
    for model in stack.models:
        field = f"model[{model.index}].program" if "program" in model.explicit else f"model[{model.index}].name"
        if model.program in owners:
            problems.add(field, f"program name {model.program!r} is already used by {owners[model.program]}; "
                         "set program = \"...\" to another name")
        owners.setdefault(model.program, f"model[{model.index}]")
    for program in stack.programs:
        if program.name in owners:
            problems.add(f"program[{program.index}].name", f"{program.name!r} is already used by {owners[program.name]}")
        owners.setdefault(program.name, f"program[{program.index}]")
    fields = {model.program: f"model[{model.index}].program" if "program" in model.explicit else
              f"model[{model.index}].name" for model in stack.models}
    fields |= {program.name: f"program[{program.index}].name" for program in stack.programs}
    _check_log_files(fields, owners, problems)


def _check_log_files(fields: dict[str, str], owners: dict[str, str], problems: Problems) -> None:
    """Each program writes logs/NAME.log and logs/NAME.err.log: `x.err`'s stdout log is `x`'s stderr log."""
    for name, field in fields.items():
        if len(name) > PROGRAM_NAME_MAX:
            problems.add(field, f"program name {name[:20]!r}... is {len(name)} characters long; at most "
                         f"{PROGRAM_NAME_MAX} (its log file names must fit the file system); set program = \"...\"")
        if name.endswith(".err") and name[:-4] in owners:
            problems.add(field, f"program {name!r} would write logs/{name}.log, which is the stderr log of "
                         f"{owners[name[:-4]]} (program {name[:-4]!r}); choose another name")


def _check_ports(stack: Stack, problems: Problems) -> None:
    """No two programs of one node on one port (nodes of a cluster each have their own ports)."""
    from baremetal.config.cluster import ray_port_claims

    nodes = [n.name for n in stack.cluster.nodes] if stack.cluster else [None]
    head = stack.cluster.head.name if stack.cluster else None
    for node in nodes:
        # Ray's ports first: a model on one of them is the one to move.
        claims: list[tuple[range, str]] = ray_port_claims(stack.cluster) if stack.cluster else []
        if node == head:
            if stack.api.kind != "none":
                claims.append((_one(stack.api.port), "api.port"))
            if stack.controller.enabled:
                claims.append((_one(stack.controller.port), "controller.port"))
        if stack.watchdog.enabled:
            claims.append((_one(stack.watchdog.metrics_port), "watchdog.metrics_port"))
        claims += [(_one(m.port), f"model[{m.index}].port") for m in stack.models if m.node == node]
        claims += [(_one(p.port), f"program[{p.index}].port") for p in stack.programs if p.port and p.node == node]
        taken: list[tuple[range, str]] = []
        for ports, field in claims:
            owner = next((other for span, other in taken if ports.start < span.stop and span.start < ports.stop), None)
            if owner:
                where = f" on node {node!r}" if node else ""
                what = f"port {ports.start}" if len(ports) == 1 else f"ports {ports.start}-{ports.stop - 1}"
                problems.add(field, f"{what} is already taken by {owner}{where}")
            else:
                taken.append((ports, field))


def _one(port: int) -> range:
    return range(port, port + 1)


def _check_model(model: Model, problems: Problems) -> None:
    path = f"model[{model.index}]"
    given = {key for key in VLLM_ONLY + CHAT_ONLY if getattr(model, key) is not None}
    if not str(model.path) or str(model.path) == ".":
        return
    if model.engine == "fastchat":
        for key in sorted(given & set(VLLM_ONLY)):
            problems.add(f"{path}.{key}", f"only vLLM engines use {key}; engine \"fastchat\" is the transformers worker")
        for key in ("tensor_parallel", "pipeline_parallel"):
            if key in model.explicit:
                problems.add(f"{path}.{key}", "FastChat's model_worker spreads a model over its gpus by itself "
                             "(--num-gpus); remove this key or use engine = \"vllm\"")
    if model.task != "chat":
        for key in sorted(given & set(CHAT_ONLY)):
            problems.add(f"{path}.{key}", f"makes no sense for a model with task = {model.task!r}; remove it")
    if model.task == "embed" and model.engine == "fastchat" and not _fastchat_loads_as_encoder(model.path):
        problems.warn(f"{path}.path", "FastChat's model_worker loads an embedding model as an encoder only when "
                      "its path contains \"bge\" or \"e5-\"; any other (e.g. all-MiniLM-L6-v2) loads as a "
                      "language model with an untrained head and returns meaningless vectors (of the vocabulary's "
                      "size): use engine = \"vllm\" for it")
    if model.task == "rerank" and model.engine in FASTCHAT_ENGINES:
        problems.add(f"{path}.task", "FastChat workers cannot rerank; use engine = \"vllm\" for rerank models")
    if model.engine != "fastchat" and model.gpus:
        product = model.tensor_parallel * model.pipeline_parallel
        if product != len(model.gpus):
            problems.add(f"{path}.tensor_parallel", f"tensor_parallel ({model.tensor_parallel}) x pipeline_parallel "
                         f"({model.pipeline_parallel}) = {product}, but gpus lists {len(model.gpus)} "
                         f"GPU{'s' if len(model.gpus) != 1 else ''}; they must match")
    if model.on_cpu:
        if model.distributed_backend == "ray":
            problems.add(f"{path}.distributed_backend", "vLLM's CPU backend cannot use ray; use \"mp\" or pin gpus")
        if model.gpu_memory_utilization is not None:
            problems.warn(f"{path}.gpu_memory_utilization", "ignored on CPU; set VLLM_CPU_KVCACHE_SPACE (GiB) in "
                          "environment instead")


def _fastchat_loads_as_encoder(model_path) -> bool:
    """FastChat 0.2.36 picks its model adapter by path: only BGE and E5 load with AutoModel (checked there)."""
    text = str(model_path).lower()
    return "bge" in text or "e5-" in text


def _check_shared_gpus(stack: Stack, problems: Problems) -> None:
    """Models sharing a GPU must not ask for more than all of its memory together."""
    share: dict[tuple[str, int], list[Model]] = defaultdict(list)
    for model in stack.models:
        if model.engine != "fastchat":
            for gpu in model.gpus or ():
                share[(model.node or "", gpu)].append(model)
    for (_node, gpu), group in sorted(share.items()):
        if len(group) < 2:
            continue
        total = sum(m.gpu_memory_utilization or VLLM_DEFAULT_GPU_MEMORY_UTILIZATION for m in group)
        if total > 1.0 + 1e-9:
            parts = " + ".join(f"{m.gpu_memory_utilization or VLLM_DEFAULT_GPU_MEMORY_UTILIZATION:g}"
                               f" ({m.name}{'' if m.gpu_memory_utilization else ', default'})" for m in group)
            problems.add(f"model[{group[-1].index}].gpu_memory_utilization",
                         f"models on GPU {gpu} ask for {parts} = {total:g} of its memory; "
                         "set gpu_memory_utilization on each so they sum to at most 1.0")


def _check_routes(stack: Stack, problems: Problems) -> None:
    models = {m.name: m.task for m in stack.models}
    for program in stack.programs:
        if program.serves and program.serves.model in models and models[program.serves.model] != program.serves.task:
            problems.add(f"program[{program.index}].serves.task",
                         f"{program.serves.model!r} is also a {models[program.serves.model]} model; replicas share one task")
    if stack.api.kind in ("fastchat", "fastchat-tools"):
        for model in stack.models:
            if model.engine not in FASTCHAT_ENGINES:
                problems.warn(f"model[{model.index}].engine", f"api.kind = {stack.api.kind!r} only reaches FastChat "
                              f"workers; {model.name!r} ({model.engine}) will not be behind it; "
                              "use api.kind = \"gateway\" to serve every model on one endpoint")
