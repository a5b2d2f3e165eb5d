"""`baremetal demo-models`: which interpreter makes the models, and the real maker's promises (built from
nothing, skipped when up to date, byte-identical on a rebuild, never replacing a folder it did not make)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from baremetal.cli import cli
from baremetal.config import load_stack
from baremetal.demo import MAKER_SCRIPT, make_demo_models, maker_python
from baremetal.demo import fixed_chats as chats
from baremetal.errors import BaremetalError, UsageError

STACK = """
[stack]
name = "demo"
models_dir = "models"
[env.fast]
kind = "system"
python = "/opt/fastchat/bin/python"
[env.gpu]
kind = "system"
python = "{vllm_python}"
[api]
kind = "none"
[watchdog]
enabled = false
[[model]]
name = "a"
path = "a"
engine = "fastchat"
env = "fast"
[[model]]
name = "b"
path = "b"
engine = "vllm"
env = "gpu"
"""


def baremetal(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "BAREMETAL_CONFIG"}
    return subprocess.run([sys.executable, "-m", "baremetal", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())
            if path.is_file() and path.name != ".baremetal-demo.json"}


class RecordingRunner:
    """Stands in for subprocess.run at make_demo_models' seam; answers with a chosen exit status."""

    def __init__(self, returncode: int):
        self.returncode = returncode
        self.calls: list[list[str]] = []

    def __call__(self, argv, check):
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, self.returncode)


def test_interpreter_is_the_env_of_the_first_vllm_model(write_stack):
    stack = load_stack(write_stack(STACK.format(vllm_python=sys.executable)))
    assert maker_python(stack, None) == sys.executable
    assert maker_python(stack, "/other/python") == "/other/python"
    assert maker_python(None, "/other/python") == "/other/python"


@pytest.mark.parametrize("stack_text, python, error, words", [
    (None, None, UsageError, "pass --python"),
    (STACK.replace('engine = "vllm"', 'engine = "fastchat"'), None, UsageError, "no model runs vLLM"),
    (STACK.format(vllm_python="/nowhere/bin/python"), None, BaremetalError, "baremetal install"),
])
def test_interpreter_choice_errors_say_what_to_do(write_stack, stack_text, python, error, words):
    stack = load_stack(write_stack(stack_text.format(vllm_python=sys.executable))) if stack_text else None
    with pytest.raises(error, match=words):
        maker_python(stack, python)


@pytest.mark.parametrize("returncode, error", [(0, None), (1, BaremetalError), (2, UsageError)])
def test_maker_exit_status_becomes_an_error(tmp_path, returncode, error):
    runner = RecordingRunner(returncode)
    if error:
        with pytest.raises(error):
            make_demo_models(tmp_path, "/env/bin/python", force=True, only=["tiny-chat"], run=runner)
    else:
        make_demo_models(tmp_path, "/env/bin/python", force=True, only=["tiny-chat"], run=runner)
    assert runner.calls == [["/env/bin/python", str(MAKER_SCRIPT), str(tmp_path), "--force", "--only", "tiny-chat"]]


def test_cli_without_stack_or_python_is_a_usage_error(short_tmp):
    result = CliRunner().invoke(cli, ["demo-models", str(short_tmp / "models")], env={"BAREMETAL_CONFIG": ""})
    assert result.exit_code == 2
    assert "--python" in result.output and "Traceback" not in result.output


def test_maker_script_imports_nothing_heavy_in_baremetal():
    """baremetal imports the maker's constants; torch and transformers load only inside the script."""
    code = ("import sys, baremetal.demo.make_models, baremetal.cli; "
            "print([m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_real_build_from_the_stack_env_is_deterministic_and_idempotent(write_stack, vllm_python, demo_models):
    stack_file = write_stack(STACK.format(vllm_python=vllm_python))
    folder = stack_file.parent
    first = baremetal("demo-models", "-c", str(stack_file), "--only", "tiny-rerank", cwd=folder)
    assert first.returncode == 0, first.stderr
    built = folder / "models" / chats.TINY_RERANK
    assert "built" in first.stdout and json.loads((built / ".baremetal-demo.json").read_text())["recipe"] == \
        chats.RECIPES[chats.TINY_RERANK]
    assert digests(built) == digests(demo_models / chats.TINY_RERANK)      # same recipe, same bytes

    again = baremetal("demo-models", "-c", str(stack_file), "--only", "tiny-rerank", cwd=folder)
    assert again.returncode == 0 and "up to date" in again.stdout and "built" not in again.stdout


def test_real_maker_never_replaces_a_folder_it_did_not_make(short_tmp, vllm_python):
    mine = short_tmp / "models" / chats.TINY_RERANK
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own model")
    refused = baremetal("demo-models", str(short_tmp / "models"), "--python", vllm_python, "--only", "tiny-rerank",
                        cwd=short_tmp)
    assert refused.returncode == 2
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert (mine / "notes.txt").read_text() == "my own model"


def test_demo_model_files_carry_what_both_engines_need(demo_models):
    """Both engines read the same files: config dtype float32, a tokenizer class both versions know."""
    chat = json.loads((demo_models / chats.TINY_CHAT / "config.json").read_text())
    assert chat["torch_dtype"] == "float32" and chat["model_type"] == "qwen2"
    assert chat["hidden_size"] // chat["num_attention_heads"] >= 32       # vLLM's CPU attention needs it
    rerank = json.loads((demo_models / chats.TINY_RERANK / "config.json").read_text())
    assert rerank["num_labels"] == 1 and rerank["architectures"] == ["BertForSequenceClassification"]
    minilm = json.loads((demo_models / chats.MINILM / "config.json").read_text())
    assert minilm["hidden_size"] == chats.MINILM_DIMENSIONS
    assert (demo_models / chats.MINILM / "model.safetensors").stat().st_size > 80 * 2**20   # the real weights


def test_example_demo_stack_validates():
    example = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"
    result = CliRunner().invoke(cli, ["validate", "-c", str(example)])
    assert result.exit_code == 0, result.output
    for program in ("vllm-tiny-chat", "vllm-minilm", "vllm-tiny-rerank", "api", "watchdog"):
        assert program in result.output
