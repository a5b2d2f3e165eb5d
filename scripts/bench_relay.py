#!/usr/bin/env python3
"""What relaying a stream costs the gateway per chunk, measured side by side in one run, in one process.

The same vLLM-shaped stream (one token per event, as vLLM sends them) is relayed from an in-memory
upstream to an ASGI `send` that does nothing, three ways, interleaved round after round:

- floor: read a chunk, send it (the least any relay does);
- plain: the loop the gateway had before it could continue streams (read, count the first byte, send);
- gateway: baremetal.gateway.passthrough's relay as it runs now (cut at event boundaries, scan for an
  error event, keep the bytes for a migration, tell the request's flight when it sends);
- metered: the same with the usage meter every request through the gateway has (for a vLLM chat stream
  whose client did not ask for usage: complete events only, the usage event taken out).

    .venv/bin/python scripts/bench_relay.py [--chunks 1000 --chunks 8000] [--rounds 15]

Prints microseconds per chunk (median over rounds, min-max) and what each adds to the floor, for a
stream of each length: a long one also pays for folding its bytes into the parsed state (past 1 MiB,
about 4,000 events). No network, no engine: this isolates the per-chunk Python work;
scripts/bench_gateway.py measures whole requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baremetal.gateway import migration, passthrough  # noqa: E402
from baremetal.gateway.exchange import Responder  # noqa: E402
from baremetal.gateway.usage import StreamMeter  # noqa: E402


def vllm_chunks(count: int) -> list[bytes]:
    """A chat stream as vLLM sends it: a role event, `count` one-token events, the finish, [DONE]."""
    def event(delta: dict, finish: str | None = None) -> bytes:
        return migration.encode({"id": "chatcmpl-8cd81a83b5fb39a9", "object": "chat.completion.chunk",
                                 "created": 1796121786, "model": "tiny-chat",
                                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish,
                                              "token_ids": None}]})
    return ([event({"role": "assistant", "content": ""})] + [event({"content": f" word{n}"}) for n in range(count)]
            + [event({}, "stop"), migration.DONE])


class Upstream:
    """aiohttp's response, as far as the relay uses it."""

    status = 200

    def __init__(self, chunks: list[bytes]):
        self.content = self
        self._chunks = iter(chunks)

    async def readany(self) -> bytes:
        return next(self._chunks, b"")

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        data = await self.readany()
        if not data:
            raise StopAsyncIteration
        return data


async def nothing(message: dict) -> None:
    return None


async def floor(chunks: list[bytes]) -> None:
    upstream = Upstream(chunks)
    while data := await upstream.readany():
        await nothing({"type": "http.response.body", "body": data, "more_body": True})


async def plain(chunks: list[bytes]) -> None:
    respond = _PlainResponder()
    async for data in Upstream(chunks).content:
        await respond.chunk(data)


class _PlainResponder:
    """The per-chunk work of the Responder before streams could continue elsewhere."""

    def __init__(self) -> None:
        self.started_s, self.first_byte_s = time.perf_counter(), None

    async def chunk(self, data: bytes) -> None:
        if self.first_byte_s is None:
            self.first_byte_s = time.perf_counter() - self.started_s
        await nothing({"type": "http.response.body", "body": data, "more_body": True})


async def gateway(chunks: list[bytes]) -> None:
    respond = Responder(nothing, time.perf_counter())
    await passthrough._relay(Upstream(chunks), b"text/event-stream", respond, migration.StreamRecord(), None)


async def metered(chunks: list[bytes]) -> None:
    respond = Responder(nothing, time.perf_counter())
    respond.meter = StreamMeter(strip=True)
    await passthrough._relay(Upstream(chunks), b"text/event-stream", respond, migration.StreamRecord(), None)


VARIANTS = {"floor": floor, "plain": plain, "gateway": gateway, "metered": metered}


async def measure(chunks: list[bytes], rounds: int) -> dict[str, list[float]]:
    """Microseconds per chunk of each variant, round after round (the variants interleaved)."""
    per_chunk: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, relay in VARIANTS.items():
            started = time.perf_counter()
            await relay(chunks)
            per_chunk[name].append((time.perf_counter() - started) / len(chunks) * 1e6)
    return per_chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, action="append", help="token events per stream (repeatable; "
                        "default: 1000 and 8000)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"{'events':>6} {'relay':<8} {'us/chunk':>9} {'min-max':>13} {'over floor':>11}")
    results = {}
    for count in args.chunks or [1000, 8000]:
        chunks = vllm_chunks(count)
        per_chunk = asyncio.run(measure(chunks, args.rounds))
        base = statistics.median(per_chunk["floor"])
        for name, values in per_chunk.items():
            median = statistics.median(values)
            print(f"{count:>6} {name:<8} {median:9.2f} {min(values):6.2f}-{max(values):<6.2f} {median - base:+10.2f}")
        results[count] = {name: round(statistics.median(values), 3) for name, values in per_chunk.items()}
    print(f"{args.rounds} rounds, medians (min-max); events of {statistics.median(len(c) for c in chunks):.0f} bytes")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
