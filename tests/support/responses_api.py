"""The Responses API as a user checks it, with the openai SDK and LangChain's ChatOpenAI(use_responses_api=True):
the same checks for vLLM (which serves /v1/responses itself) and FastChat workers (the gateway builds it on
its chat path). tiny-chat answers its fixed conversations exactly (baremetal/demo/fixed_chats.py)."""

from __future__ import annotations

import json

from baremetal.demo import fixed_chats as chats

TOOL = {"type": "function", "name": "get_weather", "description": chats.WEATHER_TOOL["function"]["description"],
        "parameters": chats.WEATHER_TOOL["function"]["parameters"]}


def check_whole(client, model: str = "tiny-chat") -> None:
    response = client.responses.create(model=model, input=chats.PLAIN_QUESTION, temperature=0, max_output_tokens=40)
    assert response.status == "completed" and response.output_text == chats.PLAIN_ANSWER
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


def check_streamed(client, model: str = "tiny-chat") -> None:
    events = list(client.responses.create(model=model, input=chats.PLAIN_QUESTION, temperature=0,
                                          max_output_tokens=40, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == chats.PLAIN_ANSWER and len(deltas) > 1
    assert events[-1].response.output_text == chats.PLAIN_ANSWER and events[-1].response.usage.output_tokens > 0


def check_function_call(client, model: str = "tiny-chat", stream: bool = False) -> None:
    """A function call, then its result sent back as function_call_output: the model's summary."""
    if stream:
        events = list(client.responses.create(model=model, input=chats.WEATHER_QUESTION, tools=[TOOL],
                                              temperature=0, max_output_tokens=60, stream=True))
        arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        assert json.loads(arguments) == chats.WEATHER_ARGUMENTS
        output = events[-1].response.output
    else:
        output = client.responses.create(model=model, input=chats.WEATHER_QUESTION, tools=[TOOL], temperature=0,
                                         max_output_tokens=60).output
    calls = [item for item in output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", chats.WEATHER_ARGUMENTS)]
    back = client.responses.create(model=model, tools=[TOOL], temperature=0, max_output_tokens=60, input=[
        {"role": "user", "content": chats.WEATHER_QUESTION},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": chats.WEATHER_RESULT}])
    assert back.output_text == chats.WEATHER_SUMMARY


def check_langchain(base_url: str, key: str, model: str = "tiny-chat") -> None:
    """An agent's turn with ChatOpenAI on the Responses API: plain, streamed, a tool call and its result."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=base_url, api_key=key, model=model, temperature=0, max_tokens=60, max_retries=0,
                     use_responses_api=True)
    assert llm.invoke(chats.PLAIN_QUESTION).text == chats.PLAIN_ANSWER
    streamed = None
    for chunk in llm.stream(chats.PLAIN_QUESTION):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.text == chats.PLAIN_ANSWER and streamed.usage_metadata["output_tokens"] > 0
    tools = llm.bind_tools([chats.WEATHER_TOOL])
    question = HumanMessage(chats.WEATHER_QUESTION)
    called = tools.invoke([question])
    assert [(call["name"], call["args"]) for call in called.tool_calls] == [("get_weather", chats.WEATHER_ARGUMENTS)]
    result = ToolMessage(chats.WEATHER_RESULT, tool_call_id=called.tool_calls[0]["id"])
    assert tools.invoke([question, called, result]).text == chats.WEATHER_SUMMARY
