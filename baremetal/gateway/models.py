"""/v1/models with each backend's own fields, and /version.

vLLM (and [[program]] backends that serve /v1/models) describe their model: `created`, `owned_by`, `root`
(the weights' path), `parent`, `max_model_len`, `permission`; FastChat workers tell their context length
(/model_details). The gateway asks each backend once, keeps the answer for REFRESH_S, and merges the
replicas of a model: the first replica's fields, the smallest `max_model_len` (the one every replica
can serve), the earliest `created`. A backend that does not answer leaves the stack's own facts (the
model path, its max_model_len). /v1/models never waits on a slow backend for long (WAIT_S): the watchdog
probes the gateway through it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from baremetal.gateway.upstream import BackendFailed, BackendUnreachable

if TYPE_CHECKING:
    from baremetal.gateway.routing import Backend
    from baremetal.gateway.upstream import Upstream
    from baremetal.gateway.worker import WorkerClient

REFRESH_S = 60.0
RETRY_S = 5.0
WAIT_S = 0.5
ASK_TIMEOUT_S = 2.0


@dataclass
class BackendFacts:
    """What one backend said about its model (empty until it answered)."""

    fields: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    asked_s: float = float("-inf")
    answered: bool = False
    pending: asyncio.Task | None = None


def permission(created: int) -> list[dict]:
    """OpenAI's (and vLLM's) permission entry, for backends that give none."""
    return [{"id": f"modelperm-{created:x}", "object": "model_permission", "created": created,
             "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
             "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False, "organization": "*",
             "group": None, "is_blocking": False}]


def merged_entry(name: str, replicas: list[dict[str, Any]], fallback: dict[str, Any]) -> dict[str, Any]:
    """One /v1/models entry from what the replicas said (first wins, smallest max_model_len). Pure."""
    entry = {"id": name, "object": "model", **fallback}
    answered = [fields for fields in replicas if fields]
    if answered:
        entry |= {key: value for key, value in answered[0].items() if key not in ("id", "object")}
        lengths = [fields["max_model_len"] for fields in answered if isinstance(fields.get("max_model_len"), int)]
        if lengths:
            entry["max_model_len"] = min(lengths)
        created = [fields["created"] for fields in answered if isinstance(fields.get("created"), int)]
        if created:
            entry["created"] = min(created)
    if not entry.get("permission"):
        entry["permission"] = permission(int(entry["created"]))
    return entry


class ModelCatalog:
    """Cached facts per backend, asked in the background."""

    def __init__(self, upstream: "Upstream", workers: "WorkerClient", started_s: int):
        self.upstream = upstream
        self.workers = workers
        self.started_s = started_s
        self.facts: dict[str, BackendFacts] = {}

    def _facts(self, backend: "Backend") -> BackendFacts:
        return self.facts.setdefault(backend.name, BackendFacts())

    async def entries(self, models: dict[str, tuple["Backend", ...]], fallbacks: dict[str, dict]) -> list[dict]:
        """One entry per model, in the order given."""
        await self._refresh([backend for backends in models.values() for backend in backends])
        return [merged_entry(name, [self._facts(b).fields for b in backends],
                             {"created": self.started_s, "owned_by": "baremetal", "root": name, "parent": None}
                             | fallbacks.get(name, {}))
                for name, backends in models.items()]

    async def versions(self, backends: list["Backend"]) -> dict[str, str | None]:
        """PROGRAM -> the version its /version reports (vLLM), None when it has none."""
        await self._refresh(backends)
        return {backend.name: self._facts(backend).version for backend in backends}

    async def _refresh(self, backends: list["Backend"]) -> None:
        """Ask stale backends again (one question at a time each); wait briefly for those never answered."""
        now = time.monotonic()
        waiting = []
        for backend in backends:
            facts = self._facts(backend)
            due = facts.asked_s + (REFRESH_S if facts.answered else RETRY_S)
            if facts.pending is None and now >= due:
                facts.asked_s = now
                facts.pending = asyncio.ensure_future(self._ask(backend, facts))
            if facts.pending is not None and not facts.answered:
                waiting.append(facts.pending)
        if waiting:
            await asyncio.wait(waiting, timeout=WAIT_S)

    async def _ask(self, backend: "Backend", facts: BackendFacts) -> None:
        try:
            if backend.kind == "fastchat":
                length = await self.workers.context_length(backend)
                facts.fields = {"owned_by": "fastchat", "max_model_len": length}
                if backend.model_dir is not None:
                    facts.fields["root"] = str(backend.model_dir)
            else:
                listed = await self.upstream.get_json(backend.url + "/v1/models", ASK_TIMEOUT_S)
                data = listed.get("data") if isinstance(listed, dict) else None
                entries = [item for item in data or [] if isinstance(item, dict)]
                mine = next((item for item in entries if item.get("id") == backend.model), None)
                facts.fields = dict(mine or (entries[0] if entries else {}))
                if backend.kind == "vllm":
                    answer = await self.upstream.get_json(backend.url + "/version", ASK_TIMEOUT_S)
                    if isinstance(answer, dict) and isinstance(answer.get("version"), str):
                        facts.version = answer["version"]
            facts.answered = True
        except (BackendFailed, BackendUnreachable):
            pass
        finally:
            facts.pending = None


def common_version(versions: dict[str, str | None], own: str) -> str:
    """The engines' version when every vLLM backend that answered has the same one, else baremetal's. Pure."""
    found = {version for version in versions.values() if version}
    return found.pop() if len(found) == 1 else own
