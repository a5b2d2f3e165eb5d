"""What to type to use a running stack: a curl and an openai-SDK call with the stack's real address, key
and model names, and how to stop it. scripts/quickstart prints this after `baremetal up`:

    python -m baremetal.demo.usage STACK_FILE [--cwd DIR] [--python PATH] [--baremetal PATH]

The prompts are the demo's trained ones (baremetal/demo/fixed_chats.py), so tiny-chat answers them
exactly; any chat model answers them somehow. `examples()` is pure (the tests run what it prints
against a real stack); keys are shown as the stack file names them: a literal key as written (it is
already in the file in clear), `env:VAR` as `$VAR`, `file:PATH` as a read of that file.
"""

from __future__ import annotations

import argparse
import json
import os
import pprint
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from baremetal.config.model import Stack, connect_host
from baremetal.demo import fixed_chats as chats

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Examples:
    """Shell commands for one stack; each runs as printed (bash) against the running stack."""

    base_url: str                   # http://HOST:PORT/v1
    models: tuple[tuple[str, str], ...]   # (served name, task), in stack order, one per name
    chat: str | None                # curl: a chat completion
    rerank: str | None              # curl: a rerank
    python: str | None              # python with the openai SDK: chat, a tool call, embeddings
    status: str
    logs: str | None
    stop: str


@dataclass(frozen=True)
class _Key:
    shell: str | None       # what goes after "Bearer " inside double quotes; None: no key needed
    python: str             # a Python expression for api_key=


def _key(specs: tuple[str, ...]) -> _Key:
    """How the examples get the first API key, without resolving env: or file: specs."""
    if not specs:
        return _Key(None, json.dumps("unused"))
    spec = specs[0]
    if spec.startswith("env:") and _ENV_NAME.fullmatch(spec[4:]):
        return _Key("${%s}" % spec[4:], f"os.environ[{json.dumps(spec[4:])}]")
    if spec.startswith("file:"):
        path = spec[5:]
        return _Key(f"$(grep -m1 -v -e '^#' -e '^[[:space:]]*$' {shlex.quote(path)})",
                    f"next(line.strip() for line in open({json.dumps(path)}) "
                    "if line.strip() and not line.startswith('#'))")
    return _Key(spec, json.dumps(spec))


def _curl(url: str, key: _Key, body: dict) -> str:
    lines = [f"curl -s {shlex.quote(url)}"]
    if key.shell is not None:
        header = f"Authorization: Bearer {key.shell}"
        lines.append(f'  -H "{header}"' if key.shell.startswith(("$", "${")) else f"  -H {shlex.quote(header)}")
    lines.append("  -H 'Content-Type: application/json'")
    lines.append(f"  -d {shlex.quote(json.dumps(body))}")
    return " \\\n".join(lines)


def _python(python: str, base_url: str, key: _Key, chat: str | None, tools: bool, embed: str | None) -> str:
    lines = [f"{python} - <<'EOF'"]
    if key.python.startswith("os."):
        lines.append("import os")
    lines += ["from openai import OpenAI", "",
              f"client = OpenAI(base_url={json.dumps(base_url)}, api_key={key.python})"]
    if chat:
        lines += ["", f"reply = client.chat.completions.create(model={json.dumps(chat)}, temperature=0, messages=[",
                  f"    {{\"role\": \"user\", \"content\": {json.dumps(chats.PLAIN_QUESTION)}}}])",
                  "print(reply.choices[0].message.content)"]
    if chat and tools:
        tool = pprint.pformat(chats.WEATHER_TOOL, width=100, sort_dicts=False).replace("\n", "\n" + " " * 10)
        lines += ["", f"weather = {tool}",
                  f"reply = client.chat.completions.create(model={json.dumps(chat)}, temperature=0, tools=[weather], "
                  "messages=[",
                  f"    {{\"role\": \"user\", \"content\": {json.dumps(chats.WEATHER_QUESTION)}}}])",
                  "call = reply.choices[0].message.tool_calls[0].function",
                  "print(call.name, call.arguments)"]
    if embed:
        lines += ["", f"vectors = client.embeddings.create(model={json.dumps(embed)}, input=[\"a cat sits on the mat\"])",
                  "print(len(vectors.data[0].embedding), \"dimensions\")"]
    lines.append("EOF")
    return "\n".join(lines)


def examples(stack: Stack, config: str, python: str = "python3", baremetal: str = "baremetal") -> Examples:
    """The commands for `stack`, naming the stack file as `config` and the tools as given."""
    base_url = f"http://{connect_host(stack.api.host)}:{stack.api.port}/v1"
    models: dict[str, str] = {}
    for model in stack.models:
        models.setdefault(model.name, model.task)
    for program in stack.programs:
        if program.serves:
            models.setdefault(program.serves.model, program.serves.task)
    by_task = {task: next((name for name, kind in models.items() if kind == task), None)
               for task in ("chat", "embed", "rerank")}
    chat = by_task["chat"]
    chat_model = stack.model(chat) if chat else None
    tools = chat_model is not None and (chat_model.tool_call_parser is not None or chat_model.engine != "vllm")
    where = f"-c {shlex.quote(config)}"
    logs = None
    if stack.models:
        logs = f"{baremetal} logs {stack.models[0].program} --stderr {where}"
    status, stop = f"{baremetal} status {where}", f"{baremetal} down {where}"
    if stack.api.kind == "none":
        return Examples(base_url, tuple(models.items()), None, None, None, status, logs, stop)
    key = _key(stack.api.key_specs)
    chat_curl = rerank_curl = None
    if chat:
        chat_curl = _curl(f"{base_url}/chat/completions", key, {
            "model": chat, "temperature": 0, "messages": [{"role": "user", "content": chats.PLAIN_QUESTION}]})
    if by_task["rerank"] and stack.api.kind == "gateway":
        rerank_curl = _curl(f"{base_url}/rerank", key, {
            "model": by_task["rerank"], "query": chats.RERANK_QUERY, "documents": chats.RERANK_DOCUMENTS[::-1]})
    code = _python(python, base_url, key, chat, tools, by_task["embed"]) if (chat or by_task["embed"]) else None
    return Examples(base_url, tuple(models.items()), chat_curl, rerank_curl, code, status, logs, stop)


def usage_text(stack: Stack, found: Examples) -> str:
    """The text scripts/quickstart prints: what serves where, the commands, how to stop."""
    served = ", ".join(f"{name} ({task})" for name, task in found.models) or "no models"
    if stack.api.kind == "none":
        parts = [f"Stack {stack.stack.name!r} is up; it has no API endpoint (api.kind = \"none\"): {served}."]
    else:
        parts = [f"Stack {stack.stack.name!r} is up: {found.base_url} serves {served}."]
    if found.chat:
        parts += ["", "Chat with curl:", "", found.chat]
    if found.rerank:
        parts += ["", "Rerank with curl (the most relevant document comes back first):", "", found.rerank]
    if found.python:
        parts += ["", "The openai SDK (chat, a tool call, embeddings):", "", found.python]
    parts += ["", f"Status:  {found.status}"]
    if found.logs:
        parts.append(f"Logs:    {found.logs}")
    parts.append(f"Stop:    {found.stop}")
    return "\n".join(parts)


def _shown(path: str, cwd: Path) -> str:
    """`path` relative to the user's folder when it lies below it (shorter to copy), else absolute."""
    absolute = Path(path).absolute()
    try:
        relative = absolute.relative_to(cwd.absolute())
    except ValueError:
        return str(absolute)
    text = str(relative)
    return text if "/" in text else f"./{text}"


def main(argv: list[str] | None = None) -> int:
    """Print the usage text for a stack file (exit 2 with a message when it does not load)."""
    from baremetal.config import load_stack
    from baremetal.errors import BaremetalError

    parser = argparse.ArgumentParser(prog="python -m baremetal.demo.usage", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the stack file")
    parser.add_argument("--cwd", default=os.getcwd(), help="show paths relative to this folder")
    parser.add_argument("--python", default=sys.executable, help="the interpreter with the openai SDK")
    parser.add_argument("--baremetal", default="baremetal", help="how to run baremetal")
    args = parser.parse_args(argv)
    cwd = Path(args.cwd)
    try:
        stack = load_stack(Path(args.config))
    except BaremetalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    shown_baremetal = _shown(args.baremetal, cwd) if "/" in args.baremetal else args.baremetal
    print(usage_text(stack, examples(stack, _shown(args.config, cwd), _shown(args.python, cwd), shown_baremetal)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
