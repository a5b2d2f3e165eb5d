"""Request bodies: JSON parsing and type checks of the fields the gateway or OpenAI's API define.

Pure functions over bytes and dicts. Fields a backend adds on its own (vLLM's `guided_json`, TEI's
`texts`) pass untouched; known fields of the wrong type are a 400 naming the field, so a client gets
the same answer whichever engine serves the model.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from baremetal.gateway.errors import GatewayError, bad_request

MAX_BODY_BYTES = 32 * 1024 * 1024   # a 128k-token prompt is ~0.5 MB; large embedding batches fit too

_NUMBER = "number"
_INTEGER = "integer"
_TYPE_NAMES = {str: "a string", bool: "a boolean", list: "an array", dict: "an object",
               _NUMBER: "a number", _INTEGER: "an integer", type(None): "null"}

_COMMON = {"model": (str,), "stream": (bool, type(None)), "user": (str, type(None))}
_SAMPLING = {"n": (_INTEGER, type(None)), "max_tokens": (_INTEGER, type(None)),
             "temperature": (_NUMBER, type(None)), "top_p": (_NUMBER, type(None)),
             "top_k": (_INTEGER, type(None)), "presence_penalty": (_NUMBER, type(None)),
             "frequency_penalty": (_NUMBER, type(None)), "repetition_penalty": (_NUMBER, type(None)),
             "seed": (_INTEGER, type(None)), "stop": (str, list, type(None)),
             "stream_options": (dict, type(None))}

# endpoint -> (field types, required fields)
ENDPOINTS: dict[str, tuple[dict[str, tuple], tuple[str, ...]]] = {
    "chat": (_COMMON | _SAMPLING | {"messages": (list,), "max_completion_tokens": (_INTEGER, type(None)),
                                    "tools": (list, type(None)), "tool_choice": (str, dict, type(None)),
                                    "parallel_tool_calls": (bool, type(None)),
                                    "logprobs": (bool, type(None)), "top_logprobs": (_INTEGER, type(None)),
                                    "response_format": (dict, type(None))},
             ("model", "messages")),
    "completions": (_COMMON | _SAMPLING | {"prompt": (str, list), "echo": (bool, type(None)),
                                           "logprobs": (_INTEGER, type(None)), "suffix": (str, type(None))},
                    ("model", "prompt")),
    "embeddings": (_COMMON | {"input": (str, list), "encoding_format": (str, type(None)),
                              "dimensions": (_INTEGER, type(None))},
                   ("model", "input")),
    "rerank": (_COMMON | {"query": (str,), "top_n": (_INTEGER, type(None))}, ("model",)),
    "score": (_COMMON, ("model",)),
    "responses": (_COMMON | {"input": (str, list), "instructions": (str, type(None)), "tools": (list, type(None)),
                             "tool_choice": (str, dict, type(None)), "parallel_tool_calls": (bool, type(None)),
                             "max_output_tokens": (_INTEGER, type(None)), "temperature": (_NUMBER, type(None)),
                             "top_p": (_NUMBER, type(None)), "previous_response_id": (str, type(None)),
                             "text": (dict, type(None)), "reasoning": (dict, type(None))},
                  ("model",)),
    "messages": (_COMMON | {"messages": (list,), "max_tokens": (_INTEGER,), "system": (str, list, type(None)),
                            "tools": (list, type(None)), "temperature": (_NUMBER, type(None))},
                 ("model", "messages")),
    "chat_batch": (_COMMON | {"messages": (list,)}, ("model", "messages")),
}
# Every other endpoint (tokenize, pooling, classify, ...): the model is all the gateway needs to know.
_OTHER = (_COMMON, ("model",))


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    if len(body) > MAX_BODY_BYTES:
        raise body_too_large(len(body))
    if not body.strip():
        raise bad_request("The request body is empty; send a JSON object.")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise bad_request(f"The request body is not valid JSON: {error}.") from None
    except RecursionError:
        raise bad_request("The request body nests JSON arrays or objects too deeply (the parser's limit is about "
                          f"{sys.getrecursionlimit()} levels).", code="json_too_deep") from None
    if not isinstance(payload, dict):
        raise bad_request(f"The request body must be a JSON object, not {_describe(payload)}.")
    return payload


def body_too_large(size_bytes: int | None = None) -> Exception:
    """413 for a body over MAX_BODY_BYTES (read no further than the limit)."""
    got = f" ({size_bytes} bytes)" if size_bytes else ""
    return GatewayError(413, f"The request body is too large{got}; the limit is {MAX_BODY_BYTES} bytes.",
                        "invalid_request_error", "request_too_large")


def check_fields(endpoint: str, payload: dict[str, Any]) -> str:
    """Check the known fields of `payload` for `endpoint`; returns the model name."""
    types, required = ENDPOINTS.get(endpoint, _OTHER)
    for name in required:
        if payload.get(name) is None:
            raise bad_request(f"'{name}' is required.", param=name)
    for name, allowed in types.items():
        if name in payload and not any(_is(payload[name], kind) for kind in allowed):
            expected = " or ".join(_TYPE_NAMES[kind] for kind in allowed)
            raise bad_request(f"'{name}' must be {expected}, not {_describe(payload[name])}.", param=name)
    if not payload["model"]:
        raise bad_request("'model' must not be empty.", param="model")
    return payload["model"]


def _is(value: Any, kind: Any) -> bool:
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is type(None):
        return value is None
    return isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))


def _describe(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (str, "a string"), (int, "an integer"), (float, "a number"),
                       (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__
