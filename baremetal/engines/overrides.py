"""A model's `args` against the flags baremetal generates itself. Most of them the user's flag simply wins
(engines.args.merge_args). Those baremetal also relies on elsewhere are, per flag, either

- followed: the flag's value becomes the model's setting, so the checks (GPUs = tensor x pipeline parallel,
  shared GPU memory), the cluster's placement and `validate` see what the engine will do; or
- refused: where the engine listens (--host, --port), the name it serves (--served-model-name) and what
  it loads (--model) are how the probes, the gateway, `status` and the port checks reach it, so a second
  spelling in `args` would leave them talking to a port or a name nobody serves. The stack file's key is
  the one place to set those. `--api-key` is refused too: argv is readable by every local user, and
  the engines listen behind the gateway, which holds the keys.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from baremetal.config.model import DISTRIBUTED_BACKENDS, Model
from baremetal.engines.args import flag_key, group_flags

# flag -> (the stack file key to use instead, why)
_WHERE = "probes, the gateway, `status` and the port checks use it"
REFUSED_VLLM = {
    "port": ("port", _WHERE), "host": ("host", _WHERE),
    "served-model-name": ("name", "the gateway routes requests by it and the probes send it"),
    "model": ("path", "it is already given as the model's path"),
    "task": ("task", "the probes and the gateway pick their requests by it"),
    "runner": ("task", "the probes and the gateway pick their requests by it"),
    "api-key": ("api.api_keys", "a key on the command line is visible to every local user in `ps`; the "
                                "gateway checks keys, the engine listens behind it"),
}
REFUSED_FASTCHAT = {
    "port": ("port", _WHERE), "host": ("host", _WHERE),
    "model-names": ("name", "the gateway routes requests by it"),
    "model-path": ("path", "it is already given as the model's path"),
    "worker-address": ("host/port", "the controller and the gateway reach the worker there"),
    "controller-address": ("[controller]", "the worker registers with the stack's own controller"),
}
# flag -> the Model field it sets, for each engine
FOLLOWED_VLLM = {"tensor-parallel-size": "tensor_parallel", "pipeline-parallel-size": "pipeline_parallel",
                 "distributed-executor-backend": "distributed_backend",
                 "gpu-memory-utilization": "gpu_memory_utilization", "max-model-len": "max_model_len",
                 "dtype": "dtype"}
FOLLOWED_FASTCHAT_VLLM = {"num-gpus": "tensor_parallel", "gpu-memory-utilization": "gpu_memory_utilization",
                          "max-model-len": "max_model_len", "dtype": "dtype"}
_NUMBER_FIELDS = {"tensor_parallel": int, "pipeline_parallel": int, "max_model_len": int,
                  "gpu_memory_utilization": float}


def _rules(model: Model) -> tuple[dict, dict]:
    if model.engine == "vllm":
        return REFUSED_VLLM, FOLLOWED_VLLM
    if model.engine == "fastchat-vllm":
        return REFUSED_FASTCHAT, FOLLOWED_FASTCHAT_VLLM
    return REFUSED_FASTCHAT, {}


def _flag_values(args: tuple[str, ...]) -> list[tuple[int, str, str, str | None]]:
    """(index in args, the flag as written, its key, its value or None) for every flag in `args`."""
    found, index = [], 0
    for group in group_flags(args):
        key = flag_key(group[0])
        if key is not None:
            written, _, inline = group[0].partition("=")
            value = inline if "=" in group[0] else (group[1] if len(group) > 1 else None)
            found.append((index, written, key, value))
        index += len(group)
    return found


def follow_args(model: Model, path: str, add: Callable[[str, str], None], warn: Callable[[str, str], None]) -> Model:
    """`model` with the settings its `args` override (followed flags: the flag wins, as everywhere in args,
    with a warning when the stack file's key says otherwise); every refused flag recorded with
    `add(field path, message)`."""
    refused, followed = _rules(model)
    changes: dict = {}
    for index, written, key, value in _flag_values(model.args):
        where = f"{path}.args[{index}]"
        if key in refused:
            field, why = refused[key]
            add(where, f"{written} is set by baremetal from {field} ({why}); set {field} in the stack file "
                       f"instead of {written} in args")
        elif key in followed and value is not None:
            setting = _setting(followed[key], value)
            if setting is _NOT_A_NUMBER:
                add(where, f"{written} {value!r}: expected a number")
                continue
            field = followed[key]
            current = getattr(model, field)
            explicit = field in model.explicit or (field not in ("tensor_parallel", "pipeline_parallel")
                                                   and current is not None)
            if explicit and current != setting:
                warn(where, f"{written} {value} replaces {field} = {current!r} of the stack file (the flag "
                            "wins); set only one of them")
            changes[field] = setting
    if not changes:
        return model
    parallel = {field for field in changes if field in ("tensor_parallel", "pipeline_parallel")}
    if "pipeline_parallel" in changes and "tensor_parallel" not in set(changes) | model.explicit and model.gpus:
        changes["tensor_parallel"] = max(len(model.gpus) // changes["pipeline_parallel"], 1)
    return dataclasses.replace(model, **changes, explicit=frozenset(model.explicit | parallel))


_NOT_A_NUMBER = object()


def _setting(field: str, value: str):
    """The Model value for a followed flag's text (_NOT_A_NUMBER where a number was needed). An executor
    backend other than mp or ray (uni, external_launcher) is vLLM's business: None to baremetal."""
    if field == "distributed_backend":
        return value if value in DISTRIBUTED_BACKENDS else None
    kind = _NUMBER_FIELDS.get(field)
    if kind is None:
        return value
    try:
        return kind(value)
    except ValueError:
        return _NOT_A_NUMBER
