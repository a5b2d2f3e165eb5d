"""Tokens per request, read from the usage the engine reports, and the per-key counters of /metrics.

Whole answers carry `usage` at their end (OpenAI's prompt/completion_tokens, the Responses API's and
Anthropic's input/output_tokens); it is found with one `rfind` and decoded alone, never the whole body.
Streams carry it in an event: chat and text completions only when the client asks
(`stream_options.include_usage`), so for clients that did not, the gateway asks the engine itself
(`with_stream_usage`) and the StreamMeter takes that last usage event out again before the client sees
it; the Responses API (`response.completed`) and Anthropic (`message_start`, `message_delta`) always send it.

Metrics (label values are key *names*, "-" for unnamed keys):
- baremetal_gateway_key_requests_total{key,model,status}
- baremetal_gateway_tokens_total{key,model,kind}   kind = prompt | completion
- baremetal_gateway_rate_limited_total{key,limit}  limit = requests_per_minute | tokens_per_minute | max_concurrent
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from baremetal.metrics import prometheus

if TYPE_CHECKING:
    from baremetal.gateway.exchange import ClientRequest

_USAGE = b'"usage":'
_DECODER = json.JSONDecoder()
_FLAT = re.compile(rb"\s*(\{[^{}]*\})")        # a usage object with no object inside (chat, completions, ...)
_COUNTS = re.compile(rb'"(prompt_tokens|input_tokens|completion_tokens|output_tokens|total_tokens)":\s*(\d+)')
_PROMPT_KEYS = ("prompt_tokens", "input_tokens")
_COMPLETION_KEYS = ("completion_tokens", "output_tokens")
MAX_PARTIAL_BYTES = 256 * 1024          # an unfinished usage event kept across chunks, at most
STREAM_USAGE_ENDPOINTS = frozenset({"chat", "completions"})


@dataclass(frozen=True)
class Usage:
    """Tokens of one request as the engine counted them."""

    prompt: int = 0
    completion: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def merged(self, other: "Usage") -> "Usage":
        """Counts only grow within a request (cumulative stream usage, Anthropic's two events): keep the larger."""
        return Usage(max(self.prompt, other.prompt), max(self.completion, other.completion))


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from(value: object) -> Usage | None:
    """A `usage` object in any of the engines' spellings; with only `total_tokens` (rerank), all is prompt."""
    if not isinstance(value, dict):
        return None
    prompt = next((_count(value[k]) for k in _PROMPT_KEYS if k in value), None)
    completion = next((_count(value[k]) for k in _COMPLETION_KEYS if k in value), 0)
    if prompt is None:
        prompt = _count(value.get("total_tokens")) - completion if "total_tokens" in value else 0
    return Usage(max(prompt, 0), completion)


def usage_in(data: bytes, start: int = 0) -> Usage | None:
    """The usage object after the last `"usage":` in `data` (JSON, or one SSE event), else None.

    On the hot path of every answer: a flat object (vLLM's chat, completions, embeddings, Anthropic's) is
    read with two regular expressions, a quarter of the cost of decoding it; others are decoded."""
    at = data.rfind(_USAGE, start)
    if at < 0:
        return None
    start = at + len(_USAGE)
    flat = _FLAT.match(data, start)
    if flat:
        counts = dict(_COUNTS.findall(flat.group(1)))
        completion = int(counts.get(b"completion_tokens") or counts.get(b"output_tokens") or 0)
        prompt = counts.get(b"prompt_tokens") or counts.get(b"input_tokens")
        return Usage(int(prompt) if prompt is not None else max(0, int(counts.get(b"total_tokens") or 0) - completion),
                     completion)
    return _decoded_usage(data, start)


def _decoded_usage(data: bytes, start: int) -> Usage | None:
    for end in (start + 4096, len(data)):          # usage objects are small; rerank puts results after it
        text = data[start:end].lstrip()
        if not text.startswith(b"{"):
            return None                 # "usage": null in the chunks before the last
        try:
            value, _ = _DECODER.raw_decode(text.decode("utf-8", errors="replace"))
        except ValueError:
            continue
        return usage_from(value)
    return None


def wants_stream_usage(payload: dict) -> bool:
    """Whether the client itself asked for the usage event of a chat or completions stream."""
    options = payload.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def with_stream_usage(call: "ClientRequest") -> "ClientRequest":
    """`call` asking the engine for the usage event (the client did not): for the body sent as bytes, the
    field is put in front (no re-encoding of what the client sent); existing stream_options are kept."""
    payload = dict(call.payload)
    options = payload.get("stream_options")
    payload["stream_options"] = (options if isinstance(options, dict) else {}) | {"include_usage": True}
    if "stream_options" in call.payload:
        body = json.dumps(payload, ensure_ascii=False).encode()
    else:
        start = call.body.index(b"{") + 1
        body = call.body[:start] + b'"stream_options":{"include_usage":true},' + call.body[start:]
    return replace(call, body=body, payload=payload)


class StreamMeter:
    """Watches the bytes of an SSE stream for usage events.

    `strip=False`: the bytes go on untouched; a usage event split across reads is kept aside until whole.
    `strip=True` (the gateway asked for usage, the client did not): complete events only are passed on, and
    the usage event (`"choices":[]` with a usage object) is dropped from them.
    """

    def __init__(self, strip: bool = False):
        self.strip = strip
        self.usage = Usage()
        self._partial = b""        # strip: an incomplete event; count: an incomplete usage event
        self._tail = b""           # count: the last bytes of the previous read (a key split across reads)

    def feed(self, data: bytes) -> bytes:
        """The bytes to send on for `data` just read."""
        if self.strip:
            return self._framed(data)
        if self._partial:
            self._partial += data
            if self._take(self._partial) or len(self._partial) > MAX_PARTIAL_BYTES:
                self._partial = b""
        elif _USAGE in data or _USAGE in self._tail + data[:16]:
            joined = self._tail + data
            if not self._take(joined):
                self._partial = joined[max(joined.rfind(_USAGE), 0):]
        self._tail = data[-16:]
        return data

    def finish(self) -> bytes:
        """What is left at the end of the stream (an unterminated last event)."""
        rest, self._partial = self._partial, b""
        if self.strip and rest:
            return self._drop_usage(rest)
        return b""

    def _take(self, data: bytes) -> bool:
        found = usage_in(data)
        if found is not None:
            self.usage = self.usage.merged(found)
            return True
        return False

    def _framed(self, data: bytes) -> bytes:
        if self._partial:
            data, self._partial = self._partial + data, b""
        end = data.rfind(b"\n\n")
        crlf = data.rfind(b"\r\n\r\n")
        cut = max(end + 2 if end >= 0 else -1, crlf + 4 if crlf >= 0 else -1)
        if cut < 0:
            self._partial = data
            return b""
        if cut < len(data):
            data, self._partial = data[:cut], data[cut:]
        return self._drop_usage(data) if _USAGE in data else data

    def _drop_usage(self, data: bytes) -> bytes:
        kept = []
        for event in data.split(b"\n\n"):
            found = usage_in(event) if _USAGE in event else None
            if found is not None and b'"choices":[]' in event.replace(b" ", b""):
                self.usage = self.usage.merged(found)
                continue
            kept.append(event)
        return b"\n\n".join(kept)


class UsageBook:
    """The per-key counters (one event loop: plain dicts)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.limited: dict[tuple[str, str], int] = {}

    def answered(self, key: str, model: str, status: int, usage: Usage) -> None:
        """One request of `key` for `model` (a model this node serves) finished with `status`."""
        label = (key, model, status)
        self.requests[label] = self.requests.get(label, 0) + 1
        for kind, count in (("prompt", usage.prompt), ("completion", usage.completion)):
            if count:
                self.tokens[(key, model, kind)] = self.tokens.get((key, model, kind), 0) + count

    def rate_limited(self, key: str, limit: str) -> None:
        self.limited[(key, limit)] = self.limited.get((key, limit), 0) + 1

    def render_lines(self) -> list[str]:
        """The three families in the text format."""
        lines = prometheus.family("baremetal_gateway_key_requests_total", "counter",
                                  "Requests per API key name, model and status.",
                                  [(_labels(("key", "model", "status"), k), v) for k, v in sorted(self.requests.items())])
        lines += prometheus.family("baremetal_gateway_tokens_total", "counter",
                                   "Tokens per API key name and model, as the engine reported them.",
                                   [(_labels(("key", "model", "kind"), k), v) for k, v in sorted(self.tokens.items())])
        lines += prometheus.family("baremetal_gateway_rate_limited_total", "counter",
                                   "Requests refused with 429, per API key name and limit.",
                                   [(_labels(("key", "limit"), k), v) for k, v in sorted(self.limited.items())])
        return lines


def _labels(names: tuple[str, ...], values: tuple) -> str:
    return prometheus.labels(tuple(zip(names, values)))
