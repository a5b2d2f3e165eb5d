"""`args` against the flags baremetal generates: refused where baremetal reaches the engine by them (port,
host, served name, path, task, keys), followed where its checks depend on them (parallelism, executor,
GPU memory), every other flag simply winning."""

from __future__ import annotations

from pathlib import Path

import pytest

from baremetal.config import parse_stack
from baremetal.engines.versions import VllmBuild
from baremetal.errors import ConfigError
from baremetal.plan.plan import plan
from baremetal.plan.spec import HostFacts

FILE = Path("/srv/node/baremetal.toml")
HEAD = '[stack]\nname = "t"\nroot = "/srv/state"\n[env.default]\nkind = "system"\npython = "/usr/bin/python3"\n'


def model(args: list[str], extra: str = "", engine: str = "vllm") -> str:
    quoted = ", ".join(f'"{arg}"' for arg in args)
    return HEAD + f'[[model]]\nname = "chat"\npath = "/m/chat"\nengine = "{engine}"\nargs = [{quoted}]\n{extra}'


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_stack(text, FILE)
    return [f"{issue.path}: {issue.message}" for issue in caught.value.issues]


@pytest.mark.parametrize("args, engine, field, key", [
    (["--port", "18011"], "vllm", "model[0].args[0]", "set port in the stack file"),
    (["--port=18011"], "vllm", "model[0].args[0]", "set port in the stack file"),
    (["--served-model-name", "other"], "vllm", "model[0].args[0]", "set name in the stack file"),
    (["--dtype", "half", "--host", "0.0.0.0"], "vllm", "model[0].args[2]", "set host in the stack file"),
    (["--model", "/elsewhere"], "vllm", "model[0].args[0]", "set path in the stack file"),
    (["--runner", "pooling"], "vllm", "model[0].args[0]", "set task in the stack file"),
    (["--api-key", "secret"], "vllm", "model[0].args[0]", "visible to every local user"),
    (["--model-names", "x"], "fastchat", "model[0].args[0]", "set name in the stack file"),
    (["--worker-address", "http://10.0.0.1:1"], "fastchat", "model[0].args[0]", "set host/port"),
])
def test_flags_baremetal_reaches_the_engine_by_are_refused(args, engine, field, key):
    found = errors(model(args, engine=engine, extra="gpus = []\n" if engine == "fastchat" else ""))
    assert any(error.startswith(f"{field}: ") and key in error for error in found), found


def test_parallelism_in_args_is_followed_by_the_checks_and_the_plan():
    stack = parse_stack(model(["-tp", "2", "--distributed-executor-backend", "ray"], "gpus = [0, 1]\n"), FILE)
    chat = stack.models[0]
    assert (chat.tensor_parallel, chat.distributed_backend) == (2, "ray")
    found = errors(model(["-tp", "4"], "gpus = [0, 1]\n"))
    assert any("tensor_parallel (4) x pipeline_parallel (1) = 4, but gpus lists 2 GPUs" in e for e in found)
    pipeline = parse_stack(model(["--pipeline-parallel-size", "2"], "gpus = [0, 1]\n"), FILE).models[0]
    assert (pipeline.tensor_parallel, pipeline.pipeline_parallel) == (1, 2)


def test_gpu_memory_in_args_counts_in_the_shared_gpu_check():
    text = model(["--gpu-memory-utilization", "0.5"], "gpus = [0]\n") + \
        '[[model]]\nname = "other"\npath = "/m/o"\ngpus = [0]\ngpu_memory_utilization = 0.5\n'
    assert parse_stack(text, FILE).models[0].gpu_memory_utilization == 0.5
    found = errors(text.replace('"0.5"]', '"0.8"]'))
    assert any("models on GPU 0 ask for 0.8 (chat) + 0.5 (other) = 1.3" in e for e in found), found


def test_a_flag_that_contradicts_the_key_wins_with_a_warning():
    stack = parse_stack(model(["--max-model-len=4096"], "max_model_len = 32768\n"), FILE)
    assert stack.models[0].max_model_len == 4096
    assert [w.path for w in stack.warnings] == ["model[0].args[0]"]
    assert "replaces max_model_len = 32768" in stack.warnings[0].message
    build = VllmBuild("vllm", (0, 33, 0), "pinned")
    spec = plan(stack, HostFacts("/usr/bin/python3", {"default": build}))[0]
    assert "--max-model-len=4096" in spec.argv and "32768" not in spec.argv


def test_a_non_number_where_a_number_is_needed():
    assert any("model[0].args[0]: -tp 'two': expected a number" in e for e in errors(model(["-tp", "two"])))
