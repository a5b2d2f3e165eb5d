"""FastChat command lines: controller, model_worker (transformers), vllm_worker, and the API servers."""

from __future__ import annotations

from baremetal.config.model import Api, Controller, Model, connect_host
from baremetal.engines.args import merge_args
from baremetal.launchers import launcher_path

API_MODULES = {"fastchat": "fastchat.serve.openai_api_server",
               "fastchat-tools": "fastchat.serve.openai_api_server_for_tool"}


def fastchat_environment() -> dict[str, str]:
    """Variables for every FastChat program. FastChat also writes each log line to its own day-rotated,
    never-pruned file in $LOGDIR, which defaults to the current directory (wherever supervisord was
    started: seen littering the folder `up` ran in). Empty turns that off; supervisord already keeps the
    same output, rotated, under <root>/logs/."""
    return {"LOGDIR": ""}


def controller_url(controller: Controller) -> str:
    return f"http://{connect_host(controller.host)}:{controller.port}"


def controller_argv(controller: Controller, python: str) -> list[str]:
    return [python, "-m", "fastchat.serve.controller", "--host", controller.host, "--port", str(controller.port),
            "--dispatch-method", "shortest_queue"]


def worker_argv(model: Model, python: str, controller: Controller) -> list[str]:
    """model_worker (engine "fastchat") or vllm_worker (engine "fastchat-vllm") for `model`."""
    module = "fastchat.serve.model_worker" if model.engine == "fastchat" else "fastchat.serve.vllm_worker"
    generated = ["--model-path", str(model.path), "--model-names", model.name,
                 "--host", model.host, "--port", str(model.port),
                 "--worker-address", model.url, "--controller-address", controller_url(controller)]
    gpu_count = len(model.gpus or ())
    if model.engine == "fastchat":
        generated += ["--device", "cpu" if model.on_cpu else "cuda"]
        if gpu_count > 1:
            generated += ["--num-gpus", str(gpu_count)]
    else:
        if model.tensor_parallel > 1:
            generated += ["--num-gpus", str(model.tensor_parallel)]
        if model.max_model_len:
            generated += ["--max-model-len", str(model.max_model_len)]
        if model.gpu_memory_utilization is not None:
            generated += ["--gpu-memory-utilization", f"{model.gpu_memory_utilization:g}"]
        if model.dtype:
            generated += ["--dtype", model.dtype]
    return [python, "-m", module] + merge_args(generated, model.args)


def api_argv(api: Api, python: str, controller: Controller, keys_file: str | None = None,
             keys_version: str | None = None) -> list[str]:
    """FastChat's OpenAI server (or the tool-calling fork's).

    With api_keys the server starts through a launcher that reads the key specs from `keys_file` (0600,
    plan.keys_file) and resolves them at start-up, handing them to FastChat after it has logged its
    arguments: keys reach neither a command line, nor a program file, nor a log.
    """
    flags = ["--host", api.host, "--port", str(api.port), "--controller-address", controller_url(controller)]
    module = API_MODULES[api.kind]
    if not api.api_keys:
        return [python, "-m", module] + flags
    version = ["--keys-version", keys_version] if keys_version else []
    return [python, str(launcher_path("fastchat_api")), "--module", module,
            "--keys-file", keys_file or "api-keys.json"] + version + ["--"] + flags
