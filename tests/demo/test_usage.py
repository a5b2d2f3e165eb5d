"""The commands scripts/quickstart prints (baremetal.demo.usage): which ones a stack gets, and that each runs
as printed in bash, sending the key the stack file names (literal, env:VAR, file:PATH) to a real HTTP
server that answers like an OpenAI endpoint. (Against the real demo stack: tests/e2e/test_demo_stack.py.)"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading

import pytest

from baremetal.config import load_stack
from baremetal.demo import fixed_chats as chats
from baremetal.demo.usage import examples, main, usage_text
from tests.support.ports import free_port

MODELS = '''
[[model]]
name = "chat"
path = "/m/chat"
gpus = []
tool_call_parser = "hermes"
[[model]]
name = "embed"
path = "/m/embed"
task = "embed"
gpus = []
[[model]]
name = "rank"
path = "/m/rank"
task = "rerank"
gpus = []
'''


def stack(write_stack, port: int, keys: list[str], kind: str = "gateway", models: str = MODELS):
    return load_stack(write_stack(f'''
        [stack]
        name = "try"
        root = "state"
        [api]
        kind = "{kind}"
        port = {port}
        api_keys = {json.dumps(keys)}
        [watchdog]
        enabled = false
    ''' + models))


class Recorder(http.server.ThreadingHTTPServer):
    """Answers chat (a tool call when tools are offered), embeddings and rerank; records each Authorization."""

    def __init__(self, port: int):
        self.authorizations: list[str | None] = []
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.authorizations.append(self.headers.get("Authorization"))
        if self.path.endswith("/embeddings"):
            body = {"object": "list", "model": request["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1},
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.5] * 8}]}
        elif self.path.endswith("/rerank"):
            body = {"results": [{"index": 2, "relevance_score": 0.9}]}
        else:
            message = {"role": "assistant", "content": chats.PLAIN_ANSWER}
            if request.get("tools"):
                message = {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps(chats.WEATHER_ARGUMENTS)}}]}
            body = {"id": "x", "object": "chat.completion", "created": 0, "model": request["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    recorder = Recorder(free_port())
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    yield recorder
    recorder.shutdown()
    recorder.server_close()


def bash(command: str, environment: dict | None = None) -> str:
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                            env=os.environ | (environment or {}))
    assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("spec, environment, file_text, key", [
    ("demo-key", {}, None, "demo-key"),
    ("it's $HOME \"quoted\"", {}, None, "it's $HOME \"quoted\""),
    ("env:TRY_KEY", {"TRY_KEY": "from-env"}, None, "from-env"),
    ("file:{path}", {}, "# a comment\n\nfrom-file\nsecond\n", "from-file"),
], ids=["literal", "shell-characters", "env", "file"])
def test_printed_commands_run_as_printed_and_send_the_key(write_stack, short_tmp, server, spec, environment,
                                                         file_text, key):
    if file_text is not None:
        (short_tmp / "keys").write_text(file_text, encoding="utf-8")
        spec = spec.format(path=short_tmp / "keys")
    found = examples(stack(write_stack, server.server_address[1], [spec]), "try.toml", sys.executable)
    assert json.loads(bash(found.chat, environment))["choices"][0]["message"]["content"] == chats.PLAIN_ANSWER
    assert json.loads(bash(found.rerank, environment))["results"][0]["index"] == 2
    assert bash(found.python, environment).splitlines() == [chats.PLAIN_ANSWER, 'get_weather {"city": "Paris"}',
                                                            "8 dimensions"]
    assert server.authorizations == [f"Bearer {key}"] * 5


def test_without_keys_curl_sends_no_header(write_stack, server):
    """The openai SDK insists on a key: it gets a placeholder, which a stack without keys never checks."""
    found = examples(stack(write_stack, server.server_address[1], []), "try.toml", sys.executable)
    assert "Authorization" not in found.chat
    bash(found.chat)
    bash(found.python)
    assert server.authorizations == [None] + ["Bearer unused"] * 3


def test_what_each_stack_gets(write_stack):
    full = examples(stack(write_stack, 8000, ["k"]), "s.toml", "py", "bm")
    assert full.base_url == "http://127.0.0.1:8000/v1"
    assert full.models == (("chat", "chat"), ("embed", "embed"), ("rank", "rerank"))
    assert '"model": "chat"' in full.chat and '"model": "rank"' in full.rerank
    assert "tools=[weather]" in full.python and 'model="embed"' in full.python
    assert (full.status, full.stop) == ("bm status -c s.toml", "bm down -c s.toml")
    assert full.logs == "bm logs vllm-chat --stderr -c s.toml"
    no_parser = examples(stack(write_stack, 8000, [], models=MODELS.replace('tool_call_parser = "hermes"', "")), "s")
    assert "tools=" not in no_parser.python               # vLLM without a tool parser refuses tools
    fastchat_api = examples(stack(write_stack, 8000, [], kind="fastchat"), "s")
    assert fastchat_api.rerank is None                     # FastChat's API server has no rerank
    chat_only = examples(stack(write_stack, 8000, [], models=MODELS.split("[[model]]\nname = \"embed\"")[0]), "s")
    assert (chat_only.rerank, "embeddings" in chat_only.python) == (None, False)
    no_api = examples(stack(write_stack, 8000, [], kind="none"), "s")
    assert (no_api.chat, no_api.python) == (None, None) and no_api.stop == "baremetal down -c s"
    assert "no API endpoint" in usage_text(stack(write_stack, 8000, [], kind="none"), no_api)


def test_main_prints_paths_relative_to_the_callers_folder(write_stack, short_tmp, capsys):
    stack_file = write_stack('[stack]\nname = "x"\n[api]\nport = 8123\n[[model]]\nname = "c"\npath = "/m"\ngpus = []\n')
    venv = short_tmp / "venv" / "bin"
    assert main([str(stack_file), "--cwd", str(short_tmp), "--python", str(venv / "python"),
                 "--baremetal", str(venv / "baremetal")]) == 0
    text = capsys.readouterr().out
    assert "http://127.0.0.1:8123/v1 serves c (chat)" in text
    assert "venv/bin/python - <<'EOF'" in text and "Stop:    venv/bin/baremetal down -c ./baremetal.toml" in text
    assert main([str(short_tmp / "missing.toml")]) == 2
