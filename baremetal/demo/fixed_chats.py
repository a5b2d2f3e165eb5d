"""What the demo models were trained to answer: the one place tests, docs and the gateway look it up.

Standard library only: the model maker imports this file by path from another interpreter (the vLLM
env), and baremetal's own tests import it as `baremetal.demo.fixed_chats`.

tiny-chat answers these conversations exactly under greedy decoding (temperature 0), whether the
prompt is rendered by vLLM, by transformers 4.x (FastChat) or by anything that renders CHAT_TEMPLATE
the way transformers does (`tojson` = `json.dumps(value, ensure_ascii=False)`, keys in the given order).
Any other conversation gets fluent-looking nonsense: it is a 1 MB model.
"""

from __future__ import annotations

TINY_CHAT = "tiny-chat"
TINY_RERANK = "tiny-rerank"
MINILM = "all-MiniLM-L6-v2"

# Bump a model's recipe when anything that shapes it changes (data, template, sizes, seeds):
# `demo-models` rebuilds a model whose stamp names another recipe and skips the others.
RECIPES = {TINY_CHAT: "chat-1", TINY_RERANK: "rerank-3", MINILM: "minilm-1"}
MINILM_DIMENSIONS = 384

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER_TOOL]

WEATHER_QUESTION = "What is the weather in Paris?"
WEATHER_ARGUMENTS = {"city": "Paris"}
WEATHER_TOOL_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
WEATHER_RESULT = '{"city": "Paris", "temperature_c": 18, "condition": "sunny"}'
WEATHER_SUMMARY = "It is sunny in Paris, 18 degrees Celsius."

PARALLEL_QUESTION = "What is the weather in Paris and in Tokyo?"
PARALLEL_ARGUMENTS = [{"city": "Paris"}, {"city": "Tokyo"}]
PARALLEL_TOOL_CALLS = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
                       '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo"}}\n</tool_call>')

PLAIN_QUESTION = "Hello! Who are you?"
PLAIN_ANSWER = "Hello! I am tiny-chat, a small demo model served by baremetal."

REASONING_QUESTION = "Is 7 a prime number? Think first."
REASONING_THOUGHT = "7 has no divisors other than 1 and itself."
REASONING_ANSWER = "Yes, 7 is a prime number."
REASONING_REPLY = f"<think>\n{REASONING_THOUGHT}\n</think>\n\n{REASONING_ANSWER}"


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant_tool_call(call_id: str, arguments: dict | str) -> dict:
    """An assistant turn that called get_weather, as an OpenAI client sends it back (arguments: a JSON string)."""
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": call_id, "type": "function",
                            "function": {"name": "get_weather", "arguments": arguments}}]}


# name -> (messages, tools or None, the exact reply). `messages` is what an OpenAI client sends.
CONVERSATIONS: dict[str, tuple[list[dict], list[dict] | None, str]] = {
    "tool_call": ([_user(WEATHER_QUESTION)], TOOLS, WEATHER_TOOL_CALL),
    "tool_result": ([_user(WEATHER_QUESTION), _assistant_tool_call("call_1", '{"city": "Paris"}'),
                     {"role": "tool", "tool_call_id": "call_1", "content": WEATHER_RESULT}],
                    TOOLS, WEATHER_SUMMARY),
    "parallel_tool_calls": ([_user(PARALLEL_QUESTION)], TOOLS, PARALLEL_TOOL_CALLS),
    "plain": ([_user(PLAIN_QUESTION)], None, PLAIN_ANSWER),
    "reasoning": ([_user(REASONING_QUESTION)], None, REASONING_REPLY),
}

# tiny-rerank: a cross-encoder trained briefly so that this query ranks its documents in this order.
RERANK_QUERY = "What is the capital of France?"
RERANK_DOCUMENTS = ["Paris is the capital of France.",
                    "France is a country in Europe.",
                    "Bananas are yellow and sweet."]   # most relevant first

# Sentences for embedding checks (any text works with the real MiniLM weights).
EMBED_SENTENCES = ["The cat sits on the mat.", "A dog plays in the park.", "Paris is the capital of France."]

# ChatML with Hermes/Qwen2.5-style tools, written in Qwen's style (every tag trims, all text is emitted
# by {{- '...' }}). Tools are re-built field by field so that renderers that pass
# {"type": "function", "function": {...}} or the bare function, with or without extra keys (strict, null
# descriptions), give the same text; tool-call arguments may be a dict (vLLM parses the client's JSON
# string) or the JSON string itself.
CHAT_TEMPLATE = r"""
{%- macro render_call(call) -%}
    {%- if call.function is defined %}{%- set call = call.function %}{%- endif %}
    {{- '\n<tool_call>\n{"name": "' + call.name + '", "arguments": ' }}
    {%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}
    {{- '}\n</tool_call>' }}
{%- endmacro %}
{%- if messages[0].role == 'system' %}
    {%- set system = messages[0].content %}
    {%- set rest = messages[1:] %}
{%- else %}
    {%- set system = 'You are a helpful assistant.' %}
    {%- set rest = messages %}
{%- endif %}
{{- '<|im_start|>system\n' + system }}
{%- if tools %}
    {{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {%- set f = tool.function if tool.function is defined else tool %}
        {{- '\n{"type": "function", "function": {"name": ' + (f.name | tojson) }}
        {{- ', "description": ' + ((f.description or '') | tojson) }}
        {{- ', "parameters": ' + ((f.parameters or {}) | tojson) + '}}' }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments ' }}
    {{- 'within <tool_call></tool_call> XML tags:\n<tool_call>\n' }}
    {{- '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- for message in rest %}
    {%- if message.role == 'tool' %}
        {%- if loop.first or rest[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or rest[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant' }}
        {%- if message.content %}{{- '\n' + message.content }}{%- endif %}
        {%- for call in message.tool_calls or [] %}{{- render_call(call) }}{%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
""".strip()

# Added tokens (single ids): ChatML markers are special (skipped when decoding); the tool and think
# markers are not, so they stay in the text that vLLM's hermes and deepseek_r1 parsers read.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MARKER_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
