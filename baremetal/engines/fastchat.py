"""FastChat command lines: controller, model_worker (transformers), vllm_worker, and the API servers."""

from __future__ import annotations

import json
from pathlib import Path

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


def chat_template_text(model_path: Path | str) -> str | None:
    """The model's own chat template (chat_template.jinja, else tokenizer_config.json's), None when the folder
    has none or is not local."""
    folder = Path(model_path)
    try:
        if (folder / "chat_template.jinja").is_file():
            return (folder / "chat_template.jinja").read_text(encoding="utf-8")
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):      # named templates: the default one
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    return template if isinstance(template, str) else None


def default_conv_template(chat_template: str | None) -> str | None:
    """FastChat's conversation template for a model whose own template is ChatML (Qwen and its kin), else None.

    FastChat's API servers build prompts from the worker's conversation template, which FastChat picks by
    the model folder's name: a folder not named like a model family it knows gets "one_shot", and a ChatML
    model then answers a prompt it was never trained on. qwen-7b-chat is FastChat's ChatML template (with
    Qwen's default system message, "You are a helpful assistant.")."""
    if chat_template and "<|im_start|>" in chat_template and "<|im_end|>" in chat_template:
        return "qwen-7b-chat"
    return None


def worker_argv(model: Model, python: str, controller: Controller, conv_template: str | None = None) -> list[str]:
    """model_worker (engine "fastchat") or vllm_worker (engine "fastchat-vllm") for `model`; `conv_template`
    (default_conv_template) unless the model's args name one."""
    module = "fastchat.serve.model_worker" if model.engine == "fastchat" else "fastchat.serve.vllm_worker"
    generated = ["--model-path", str(model.path), "--model-names", model.name,
                 "--host", model.host, "--port", str(model.port),
                 "--worker-address", model.url, "--controller-address", controller_url(controller)]
    if conv_template:
        generated += ["--conv-template", conv_template]
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
