"""Stack -> [ProgramSpec]: what supervisord should run, decided purely from the stack and host facts."""

from __future__ import annotations

from dataclasses import replace

from baremetal.plan import cluster as cluster_programs
from baremetal.config.model import Env, Model, Program, Stack, connect_host, frozen_mapping
from baremetal.engines import fastchat, flight_recorder, vllm
from baremetal.plan.placement import Placement, place
from baremetal.plan.spec import HostFacts, Probe, ProgramSpec

# supervisord starts lower priorities first and stops them last: the controller before the workers,
# the workers before the API, and the watchdog last, so that at shutdown it stops first and never
# "repairs" a stack that is being taken down.
PRIORITY = {"controller": 100, "worker": 200, "program": 200, "api": 300, "watchdog": 900}


def base_environment(stack: Stack) -> dict[str, str]:
    """Variables every program gets: offline hub, caches and temp files under the stack root, time zone."""
    root = stack.root
    environment = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "cache" / "huggingface"),
                   "TMPDIR": str(root / "tmp")}
    if stack.stack.timezone:
        environment["TZ"] = stack.stack.timezone
    environment |= cluster_programs.node_environment(stack)
    environment.update(stack.stack.environment)
    return environment


def _gpu_environment(gpus: tuple[int, ...] | None) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES from `gpus`, numbered as nvidia-smi and NVML number them (PCI bus order; CUDA's
    own default orders by speed, so on a mixed host `gpus = [0]` could land on another card than the one
    the watchdog watches as GPU 0)."""
    if gpus is None:
        return {}
    environment = {"CUDA_VISIBLE_DEVICES": ",".join(str(gpu) for gpu in gpus)}
    if gpus:
        environment["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return environment


def plan(stack: Stack, facts: HostFacts) -> list[ProgramSpec]:
    """Every program of the stack on this node, in start order. A cluster node runs its Ray program, the
    models and programs placed on it, and its watchdog; the head also the controller, the API and ray-monitor."""
    specs: list[ProgramSpec] = []
    base = base_environment(stack)
    if stack.cluster:
        specs += cluster_programs.cluster_specs(stack, facts.ray_client, base)
    if stack.controller.enabled and stack.is_head:
        specs.append(_controller(stack, base))
    models = [model for model in stack.models if stack.runs_here(model)]
    programs = [program for program in stack.programs if stack.runs_here(program)]
    placements = place([(m.program, m.gpus) for m in models] + [(p.name, p.gpus) for p in programs],
                       stack.stack.spare_gpus, facts.cordoned)
    specs += [_placed(_model(stack, m, facts, base, placements[m.program].gpus), placements[m.program])
              for m in models]
    specs += [_placed(_program(stack, p, facts, base, placements[p.name].gpus), placements[p.name])
              for p in programs]
    if stack.api.kind != "none" and stack.is_head:
        specs.append(_api(stack, facts, base))
    if stack.watchdog.enabled:
        specs.append(_watchdog(stack, facts, base))
    return sorted(specs, key=lambda spec: (spec.priority, spec.name))


def fastchat_python(stack: Stack) -> str:
    """The interpreter for the controller: the env of the first FastChat model, else the api's env."""
    env_name = next((m.env for m in stack.models if m.engine in ("fastchat", "fastchat-vllm")), stack.api.env)
    env: Env | None = stack.envs.get(env_name)
    return env.interpreter if env else "python3"


def _controller(stack: Stack, base: dict[str, str]) -> ProgramSpec:
    controller = stack.controller
    return ProgramSpec(name="controller", role="controller",
                       argv=tuple(fastchat.controller_argv(controller, fastchat_python(stack))),
                       environment=frozen_mapping(base | fastchat.fastchat_environment()),
                       priority=PRIORITY["controller"],
                       host=controller.host, port=controller.port,
                       probe=Probe("controller", fastchat.controller_url(controller)))


def _placed(spec: ProgramSpec, placement: Placement) -> ProgramSpec:
    """A spec moved off cordoned GPUs (or blocked) says so in its file's comment."""
    note = placement.note()
    if note is None:
        return spec
    return replace(spec, notes=spec.notes + (note,), blocked=placement.blocked)


def _model(stack: Stack, model: Model, facts: HostFacts, base: dict[str, str],
           gpus: tuple[int, ...] | None) -> ProgramSpec:
    python = stack.envs[model.env].interpreter
    environment = dict(base) | _gpu_environment(gpus)
    notes: tuple[str, ...] = ()
    if model.engine in ("vllm", "fastchat-vllm"):
        build = facts.vllm_builds[model.env]
        environment |= vllm.vllm_environment(model, str(stack.root / "cache" / "vllm"))
        notes = (f"{build.distribution} {build.version_text} ({build.source})",)
    if model.engine == "vllm":
        argv = vllm.vllm_argv(model, python, facts.vllm_builds[model.env])
        probe = Probe("vllm", model.url, model.name, model.task)
    else:
        argv = fastchat.worker_argv(model, python, stack.controller, facts.conv_templates.get(model.program))
        probe = Probe("fastchat-worker", model.url, model.name, model.task)
        environment |= fastchat.fastchat_environment()
    # NCCL ranks: their flight recorder on (Ray's actors do not inherit the program's environment)
    if model.world_size > 1 and not model.on_cpu and model.engine != "fastchat" and not model.uses_ray:
        environment |= flight_recorder.environment(flight_recorder.trace_prefix(stack.root, model.program))
    environment |= model.environment
    # Engines take minutes to load: count them started after 10 s, give them time to free GPU
    # memory on stop (a hung vLLM API server was seen ignoring SIGTERM for 9 s), and stop the
    # whole process group, since the engine core and tensor-parallel ranks are child processes.
    spec = ProgramSpec(name=model.program, role="worker", argv=tuple(argv), environment=frozen_mapping(environment),
                       priority=PRIORITY["worker"], gpus=gpus, host=model.host, port=model.port, probe=probe,
                       startsecs=10, startretries=2, stopwaitsecs=30, model=model.name, engine=model.engine,
                       notes=notes)
    if stack.cluster and model.uses_ray:
        spec = cluster_programs.launched_on_ray(spec, stack, model.world_size, facts.baremetal_python)
    return spec


def _program(stack: Stack, program: Program, facts: HostFacts, base: dict[str, str],
             gpus: tuple[int, ...] | None) -> ProgramSpec:
    environment = dict(base) | _gpu_environment(gpus)
    if len(gpus or ()) > 1:
        environment |= flight_recorder.environment(flight_recorder.trace_prefix(stack.root, program.name))
    environment |= dict(program.environment)
    probe = Probe("http", program.health) if program.health else None
    serves = program.serves
    spec = ProgramSpec(name=program.name, role="program", argv=program.command,
                       environment=frozen_mapping(environment), priority=PRIORITY["program"], gpus=gpus,
                       port=program.port, probe=probe,
                       directory=str(program.directory) if program.directory else None,
                       startsecs=program.startsecs, stopwaitsecs=program.stopwaitsecs,
                       stopsignal=program.stopsignal, model=serves.model if serves else None)
    if stack.cluster and program.ray_gpus is not None:
        spec = cluster_programs.launched_on_ray(spec, stack, program.ray_gpus, facts.baremetal_python)
    return spec


def _api(stack: Stack, facts: HostFacts, base: dict[str, str]) -> ProgramSpec:
    api = stack.api
    environment = dict(base)
    if api.kind == "gateway":
        # The gateway reads the rest of the stack file itself (and again on SIGHUP); its listen address and
        # its number of processes are on the command line, so that a change of them changes this file and
        # `up` restarts it.
        argv = [facts.baremetal_python, "-m", "baremetal", "gateway", "-c", str(stack.source),
                "--host", api.host, "--port", str(api.port)] + (["--workers", str(api.workers)] if api.workers > 1 else [])
    else:
        argv = fastchat.api_argv(api, stack.envs[api.env].interpreter, stack.controller,
                                 str(stack.run_dir / "api-keys.json"), facts.api_keys_version)
        environment |= fastchat.fastchat_environment()
    return ProgramSpec(name="api", role="api", argv=tuple(argv), environment=frozen_mapping(environment),
                       priority=PRIORITY["api"], host=api.host, port=api.port,
                       probe=Probe("openai", f"http://{connect_host(api.host)}:{api.port}"), engine=api.kind)


def _watchdog(stack: Stack, facts: HostFacts, base: dict[str, str]) -> ProgramSpec:
    watchdog = stack.watchdog
    url = f"http://{connect_host(watchdog.metrics_host)}:{watchdog.metrics_port}/metrics"
    return ProgramSpec(name="watchdog", role="watchdog",
                       argv=(facts.baremetal_python, "-m", "baremetal", "watchdog", "-c", str(stack.source)),
                       environment=frozen_mapping(base), priority=PRIORITY["watchdog"],
                       host=watchdog.metrics_host, port=watchdog.metrics_port, probe=Probe("http", url))
