"""The tool-calling FastChat fork (api.kind = "fastchat-tools") for real, installed from its local source archive
by `baremetal install`, serving the demo's tiny-chat from a real model_worker; baremetal's gateway in front of the
same worker. The same tool-calling requests go to both and what each gives is recorded side by side
(<cache>/measurements.jsonl, label fastchat-tools-side-by-side); the gateway's answers are checked, the fork's
are what the fork does. Then the Responses API on that worker through the gateway (openai SDK, LangChain).

The defaults made right: the worker gets FastChat's ChatML template (tiny-chat's own template is ChatML; by
its folder's name FastChat would pick "one_shot" and the model would answer nonsense), and the fork's server
checks the stack's API key (it reads the settings of FastChat's base server).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from baremetal.demo import fixed_chats as chats
from tests.support import responses_api
from tests.support.demo_stack import record
from tests.support.engine_envs import ensure_env
from tests.support.ports import free_ports
from tests.support.toml_text import toml_document

KEY = "fctools-e2e-key"
WEATHER = [{"role": "user", "content": chats.WEATHER_QUESTION}]


@dataclass
class ToolsStack:
    folder: Path
    stack_file: Path
    fork_url: str
    gateway_url: str
    up_output: str

    def baremetal(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "baremetal", *args, "-c", str(self.stack_file)], cwd=self.folder,
                              capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)

    def client(self, url: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tools_stack(demo_models):
    python = str(ensure_env("fastchat-tools") / "bin" / "python")
    folder = Path(tempfile.mkdtemp(prefix="bm-fct-", dir="/tmp"))
    stack_file = folder / "baremetal.toml"
    controller, api, worker, gateway = free_ports(4)
    stack_file.write_text(toml_document({
        "stack": {"name": "fctools", "root": "state", "models_dir": str(demo_models)},
        "env": {"tools": {"kind": "system", "python": python}},
        "controller": {"port": controller},
        "api": {"kind": "fastchat-tools", "port": api, "api_keys": [KEY], "env": "tools"},
        "watchdog": {"enabled": False},
        "model": [{"name": "tiny-chat", "path": chats.TINY_CHAT, "engine": "fastchat", "gpus": [], "port": worker,
                   "env": "tools"}],
        "program": [{"name": "gateway", "health": f"http://127.0.0.1:{gateway}/health",
                     "command": [sys.executable, "-m", "baremetal", "gateway", "-c", str(stack_file),
                                 "--port", str(gateway)]}],
    }), encoding="utf-8")
    running = ToolsStack(folder, stack_file, f"http://127.0.0.1:{api}/v1", f"http://127.0.0.1:{gateway}/v1", "")
    try:
        result = running.baremetal("up", "--timeout", "10m", timeout_s=700)
        running.up_output = result.stdout
        assert result.returncode == 0, result.stdout + result.stderr
        yield running
    finally:
        running.baremetal("down")
        shutil.rmtree(folder, ignore_errors=True)


def summary(call) -> dict:
    """What a client gets, in a line: the text, the tool calls, or the error."""
    try:
        message = call().choices[0].message
    except openai.APIError as error:
        return {"error": f"{type(error).__name__}: {str(error)[:160]}"}
    return {"content": message.content, "tool_calls": [(c.function.name, json.loads(c.function.arguments))
                                                        for c in message.tool_calls or []]}


def streamed(client) -> dict:
    """A streamed tool-calling request: how many chunks came, the text and the calls put together."""
    chunks, text, calls = 0, "", {}
    try:
        for chunk in client.chat.completions.create(model="tiny-chat", messages=WEATHER, tools=chats.TOOLS,
                                                    temperature=0, max_tokens=80, stream=True):
            chunks += 1
            for choice in chunk.choices:
                text += choice.delta.content or ""
                for delta in choice.delta.tool_calls or []:
                    entry = calls.setdefault(delta.index, ["", ""])
                    entry[0] += delta.function.name or ""
                    entry[1] += delta.function.arguments or ""
    except (openai.APIError, ValueError) as error:
        return {"chunks": chunks, "error": f"{type(error).__name__}: {str(error)[:160]}"}
    return {"chunks": chunks, "content": text, "tool_calls": [(name, json.loads(args) if args else None)
                                                              for name, args in calls.values()]}


def side_by_side(client) -> dict:
    def chat(messages, **extra):
        return lambda: client.chat.completions.create(model="tiny-chat", messages=messages, temperature=0,
                                                      max_tokens=80, **extra)

    result_turn = [{"role": "user", "content": chats.WEATHER_QUESTION},
                   {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                       "name": "get_weather", "arguments": json.dumps(chats.WEATHER_ARGUMENTS)}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": chats.WEATHER_RESULT}]
    return {"plain": summary(chat([{"role": "user", "content": chats.PLAIN_QUESTION}])),
            "tool call": summary(chat(WEATHER, tools=chats.TOOLS)),
            "tool call streamed": streamed(client),
            "two calls": summary(chat([{"role": "user", "content": chats.PARALLEL_QUESTION}], tools=chats.TOOLS)),
            "tool result sent back": summary(chat(result_turn, tools=chats.TOOLS))}


def test_the_same_tool_calling_requests_through_the_fork_and_through_the_gateway(tools_stack):
    assert "all 4 program(s) running and ready" in tools_stack.up_output
    fork = side_by_side(tools_stack.client(tools_stack.fork_url))
    gateway = side_by_side(tools_stack.client(tools_stack.gateway_url))
    record("fastchat-tools-side-by-side", {case: {"fork": fork[case], "gateway": gateway[case]} for case in fork})
    # the fork, with the defaults baremetal renders: FastChat's ChatML template, so tiny-chat answers right
    assert fork["plain"] == {"content": chats.PLAIN_ANSWER, "tool_calls": []}
    assert gateway["plain"] == {"content": chats.PLAIN_ANSWER, "tool_calls": []}
    assert gateway["tool call"] == {"content": None, "tool_calls": [("get_weather", chats.WEATHER_ARGUMENTS)]}
    assert gateway["tool call streamed"]["tool_calls"] == [("get_weather", chats.WEATHER_ARGUMENTS)]
    assert gateway["two calls"]["tool_calls"] == [("get_weather", arguments) for arguments in chats.PARALLEL_ARGUMENTS]
    assert gateway["tool result sent back"] == {"content": chats.WEATHER_SUMMARY, "tool_calls": []}


def test_the_fork_checks_the_stacks_key(tools_stack):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=tools_stack.fork_url, api_key="wrong", max_retries=0).chat.completions.create(
            model="tiny-chat", messages=WEATHER, max_tokens=4)


def test_the_responses_api_on_a_fastchat_worker(tools_stack):
    client = tools_stack.client(tools_stack.gateway_url)
    responses_api.check_whole(client)
    responses_api.check_streamed(client)
    responses_api.check_function_call(client)
    responses_api.check_function_call(client, stream=True)
    responses_api.check_langchain(tools_stack.gateway_url, KEY)
