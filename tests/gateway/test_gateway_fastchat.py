"""The gateway in front of a real FastChat worker (fschat 0.2.36, transformers) serving tiny-chat, all under
real supervisord from one stack file, asked with the openai SDK. tiny-chat was trained to answer fixed
prompts (baremetal.demo.fixed_chats), tool calls included: FastChat itself ignores `tools`, the gateway
builds the prompt with the model's template and turns `<tool_call>` output into `tool_calls`."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from baremetal.demo import fixed_chats as chats
from tests.support.ports import free_ports
from tests.support.running import running_stack
from tests.support.waiting import wait_for

NAMED_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def gateway(demo_models, fastchat_python, module_tmp):
    port, controller, extra, worker, conv_worker = free_ports(5)
    stack_file = module_tmp / "baremetal.toml"
    stack_file.write_text(f'''
[stack]
name = "gwfc"
root = "state"
models_dir = "{demo_models}"
[env.fastchat]
kind = "system"
python = "{fastchat_python}"
[controller]
port = {controller}
[api]
kind = "gateway"
port = {port}
[watchdog]
enabled = false
[[model]]
name = "tiny-chat"
path = "tiny-chat"
engine = "fastchat"
gpus = []
port = {worker}
[[model]]
name = "tiny-chat-conv"
path = "tiny-chat"
engine = "fastchat"
gpus = []
port = {conv_worker}
args = ["--conv-template", "qwen-7b-chat"]
[[program]]
name = "unlisted-worker"
command = ["{fastchat_python}", "-m", "fastchat.serve.model_worker", "--model-path", "{demo_models / 'tiny-chat'}",
           "--model-names", "tiny-chat-unlisted", "--device", "cpu", "--host", "127.0.0.1", "--port", "{extra}",
           "--worker-address", "http://127.0.0.1:{extra}", "--controller-address", "http://127.0.0.1:{controller}"]
''', encoding="utf-8")
    with running_stack(stack_file, label="gateway-fastchat") as running:
        running.base_url = f"http://127.0.0.1:{port}"
        yield running


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def ask(client, name: str, model: str = "tiny-chat", **extra):
    messages, tools, _reply = chats.CONVERSATIONS[name]
    if tools:
        extra.setdefault("tools", tools)
    return client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=80, **extra)


def calls_of(message) -> list[tuple[str, dict]]:
    return [(call.function.name, json.loads(call.function.arguments)) for call in message.tool_calls or []]


def streamed(stream) -> tuple[str, list[dict], list[str], list[dict]]:
    """(content, calls, finish reasons, raw tool-call deltas) of a streamed answer, as a client rebuilds it."""
    content, calls, finishes, deltas = "", {}, [], []
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                deltas.append(delta.model_dump(exclude_none=True))
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += delta.function.name or "" if delta.function else ""
                call["arguments"] += delta.function.arguments or "" if delta.function else ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return content, [calls[index] for index in sorted(calls)], finishes, deltas


def test_models_come_from_the_stack_and_the_controller(client):
    """A worker the stack does not list as a [[model]] is found through the FastChat controller."""
    wait_for(lambda: "tiny-chat-unlisted" in [model.id for model in client.models.list()], 90, 1.0,
             "the unlisted worker registered")
    assert [model.id for model in client.models.list()] == ["tiny-chat", "tiny-chat-conv", "tiny-chat-unlisted"]
    # Greedy: FastChat samples at temperature 1 by default, and a tiny model sampled may end at once.
    reply = client.chat.completions.create(model="tiny-chat-unlisted", max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": chats.PLAIN_QUESTION}])
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0


@pytest.mark.parametrize("name", ["plain", "tool_call", "parallel_tool_calls", "tool_result"])
def test_fallback_prompt_with_fastchats_conversation_template(client, name):
    """tiny-chat-conv's worker runs with --conv-template qwen-7b-chat: the gateway builds the prompt from
    FastChat's template with its own Hermes tool instructions and text tool turns, which for ChatML is
    exactly what the model was trained on, so it answers exactly as through its own template."""
    _messages, _tools, reply = chats.CONVERSATIONS[name]
    choice = ask(client, name, model="tiny-chat-conv").choices[0]
    if "<tool_call>" in reply:
        expected = [json.loads(block.split("</tool_call>")[0]) for block in reply.split("<tool_call>")[1:]]
        assert calls_of(choice.message) == [(call["name"], call["arguments"]) for call in expected]
        assert choice.finish_reason == "tool_calls"
    else:
        assert choice.message.content == reply and choice.message.tool_calls is None


def test_plain_chat_whole_and_streamed(client):
    response = ask(client, "plain")
    assert response.choices[0].message.content == chats.PLAIN_ANSWER
    assert response.choices[0].finish_reason == "stop" and response.choices[0].message.tool_calls is None
    assert response.usage.prompt_tokens > 5 and response.usage.completion_tokens > 5
    content, calls, finishes, _ = streamed(ask(client, "plain", stream=True))
    assert (content, calls, finishes) == (chats.PLAIN_ANSWER, [], ["stop"])
    chunks = list(ask(client, "plain", stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == response.usage.completion_tokens
    two = ask(client, "plain", n=2)
    assert [choice.index for choice in two.choices] == [0, 1]
    assert {choice.message.content for choice in two.choices} == {chats.PLAIN_ANSWER}
    assert two.usage.completion_tokens == 2 * response.usage.completion_tokens


def test_tool_call(client):
    choice = ask(client, "tool_call").choices[0]
    assert choice.finish_reason == "tool_calls"
    assert calls_of(choice.message) == [("get_weather", chats.WEATHER_ARGUMENTS)]
    assert choice.message.content is None
    assert choice.message.tool_calls[0].id.startswith("call_") and choice.message.tool_calls[0].type == "function"


def test_tool_call_streamed_in_openai_deltas(client):
    content, calls, finishes, deltas = streamed(ask(client, "tool_call", stream=True))
    assert content == "" and finishes == ["tool_calls"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", chats.WEATHER_ARGUMENTS)]
    head, *rest = deltas
    assert head["index"] == 0 and head["id"].startswith("call_") and head["function"]["name"] == "get_weather"
    assert rest and all("id" not in d and "name" not in d.get("function", {}) for d in rest)


def test_two_parallel_calls_whole_and_streamed(client):
    expected = [("get_weather", arguments) for arguments in chats.PARALLEL_ARGUMENTS]
    message = ask(client, "parallel_tool_calls").choices[0].message
    assert calls_of(message) == expected
    assert len({call.id for call in message.tool_calls}) == 2
    _, calls, finishes, deltas = streamed(ask(client, "parallel_tool_calls", stream=True))
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == expected and finishes == ["tool_calls"]
    assert [d["index"] for d in deltas if "id" in d] == [0, 1]


def test_parallel_tool_calls_false_keeps_one(client):
    message = ask(client, "parallel_tool_calls", parallel_tool_calls=False).choices[0].message
    assert calls_of(message) == [("get_weather", chats.PARALLEL_ARGUMENTS[0])]


def test_round_trip_with_the_tool_result(client):
    """Ask, get the call, run the 'tool', send its result back: the model answers from it."""
    first = ask(client, "tool_call").choices[0].message
    messages = [{"role": "user", "content": chats.WEATHER_QUESTION}, first.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": chats.WEATHER_RESULT}]
    assert messages[1]["content"] is None if "content" in messages[1] else True
    final = client.chat.completions.create(model="tiny-chat", messages=messages, tools=chats.TOOLS,
                                           temperature=0, max_tokens=80)
    assert final.choices[0].message.content == chats.WEATHER_SUMMARY
    assert final.choices[0].finish_reason == "stop"
    content, _, _, _ = streamed(client.chat.completions.create(model="tiny-chat", messages=messages,
                                                               tools=chats.TOOLS, temperature=0, max_tokens=80,
                                                               stream=True))
    assert content == chats.WEATHER_SUMMARY


@pytest.mark.parametrize("choice", [NAMED_WEATHER, "required"], ids=["named", "required"])
@pytest.mark.parametrize("name", ["tool_call", "parallel_tool_calls"])
def test_forced_tool_choice_starts_the_answer_for_the_model(client, choice, name):
    """FastChat has no constrained decoding: the gateway writes the start of the call (`<tool_call>` and,
    for a named function, its name) and the model continues it; the calls parse from both parts."""
    choice = ask(client, name, tool_choice=choice).choices[0]
    arguments = chats.PARALLEL_ARGUMENTS if name == "parallel_tool_calls" else [chats.WEATHER_ARGUMENTS]
    assert calls_of(choice.message) == [("get_weather", value) for value in arguments]
    assert choice.finish_reason == "tool_calls"


def test_a_forced_call_the_model_does_not_complete_comes_back_as_content(client):
    """After the tool result this 1 MB model answers in words even when the answer starts with a call:
    what it wrote comes back as content, never as an error or a made-up call."""
    choice = ask(client, "tool_result", tool_choice=NAMED_WEATHER).choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    assert choice.message.content.startswith('<tool_call>\n{"name": "get_weather", "arguments":')


def test_tool_choice_none_gives_no_calls(client):
    choice = ask(client, "tool_call", tool_choice="none").choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason in ("stop", "length")


def test_completions_and_embeddings_through_the_worker(client):
    completion = client.completions.create(model="tiny-chat", prompt="Hello", max_tokens=5, temperature=0)
    assert completion.choices[0].text and completion.usage.completion_tokens <= 5
    embeddings = client.embeddings.create(model="tiny-chat", input=["a cat", "a dog"])
    assert len(embeddings.data) == 2 and len(embeddings.data[0].embedding) == len(embeddings.data[1].embedding) > 8


def test_rerank_on_a_fastchat_worker_is_a_clear_400(gateway):
    response = httpx.post(gateway.base_url + "/v1/rerank", json={"model": "tiny-chat", "query": "q", "documents": []})
    assert response.status_code == 400 and "FastChat worker" in response.json()["error"]["message"]


def test_context_overflow_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "word " * 5000}])
    assert caught.value.code == "context_length_exceeded"


def test_client_disconnect_stops_the_work(gateway):
    """A streamed request for 8 choices runs them one after another on the worker. A client that hangs up
    during the first leaves the worker idle at once and for good; left to run, it keeps it busy."""
    worker = gateway.url("fastchat-tiny-chat")
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": chats.PLAIN_QUESTION}],
            "n": 8, "max_tokens": 40, "temperature": 0, "stream": True}

    def busy() -> bool:
        return httpx.post(worker + "/worker_get_status").json()["queue_length"] > 0

    started = time.monotonic()
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", json=body, timeout=60) as response:
        finished = [line for line in response.iter_lines() if '"finish_reason": "stop"' in line]
    full_s = time.monotonic() - started
    assert len(finished) == 8
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", json=body, timeout=60) as response:
        chunks = response.iter_raw()
        next(chunks)
        assert busy()
    wait_for(lambda: not busy(), full_s / 2, 0.01, "the worker idle after the hang-up")
    deadline = time.monotonic() + full_s
    while time.monotonic() < deadline:          # and nothing more is started for it
        assert not busy()
        time.sleep(0.02)
    metrics = httpx.get(gateway.base_url + "/metrics").text
    assert 'baremetal_gateway_in_flight{model="tiny-chat",backend="fastchat-tiny-chat"} 0' in metrics
    assert ('baremetal_gateway_requests_total{model="tiny-chat",backend="fastchat-tiny-chat",endpoint="chat",'
            'status="499"} 1') in metrics
