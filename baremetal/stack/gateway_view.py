"""What the gateway says about its backends: <root>/run/gateway.json, written by the gateway
(baremetal.gateway.witness), read by the watchdog, `status` and the CLI's drain.

    {"updated_s": epoch, "pid": N,
     "backends": {PROGRAM: {"model": ..., "in_flight": 2, "busy_since_s": epoch | null,
                            "last_byte_s": epoch | null, "last_request_s": epoch | null,
                            "oldest_wait_s": 3.2, "draining": false, "available": true}},
     "models": {MODEL: {"held": 0}}}

The gateway rewrites it at least every 5 s even when idle, so a file older than FRESH_S means no
gateway is running (nothing is in flight through it). Unknown keys are ignored; a half-known entry
reads as an idle backend. "available" (whether a new request could go to it now: not draining, not
skipped on the watchdog's word, not backing off after a refused connection) is this project's addition
to the agreed format; the CLI waits for it before draining the next replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

FRESH_S = 10.0


@dataclass(frozen=True)
class BackendView:
    """One backend as the gateway sees it. Times are epoch seconds (None: never)."""

    model: str = ""
    in_flight: int = 0
    busy_since_s: float | None = None
    last_byte_s: float | None = None
    last_request_s: float | None = None
    oldest_wait_s: float = 0.0        # the longest any request in flight has gone without a byte from it
    draining: bool = False
    available: bool = True            # a new request could go to it now (not draining, not skipped)


@dataclass(frozen=True)
class GatewayView:
    """A fresh gateway.json."""

    updated_s: float
    pid: int | None
    backends: Mapping[str, BackendView] = field(default_factory=lambda: MappingProxyType({}))
    held: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def backend(self, program: str) -> BackendView | None:
        return self.backends.get(program)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _backend(entry: Any) -> BackendView:
    if not isinstance(entry, dict):
        return BackendView()
    in_flight = _number(entry.get("in_flight"))
    return BackendView(model=str(entry.get("model") or ""), in_flight=max(0, int(in_flight or 0)),
                       busy_since_s=_number(entry.get("busy_since_s")), last_byte_s=_number(entry.get("last_byte_s")),
                       last_request_s=_number(entry.get("last_request_s")),
                       oldest_wait_s=max(0.0, _number(entry.get("oldest_wait_s")) or 0.0),
                       draining=entry.get("draining") is True, available=entry.get("available") is not False)


def gateway_view(document: Any, now_s: float, fresh_s: float = FRESH_S) -> GatewayView | None:
    """The view of a document, or None when it is not a gateway's or older than `fresh_s`. Pure."""
    if not isinstance(document, dict):
        return None
    updated = _number(document.get("updated_s"))
    if updated is None or now_s - updated > fresh_s:
        return None
    backends = document.get("backends") if isinstance(document.get("backends"), dict) else {}
    models = document.get("models") if isinstance(document.get("models"), dict) else {}
    held = {name: int(_number(entry.get("held")) or 0) for name, entry in models.items() if isinstance(entry, dict)}
    pid = document.get("pid")
    return GatewayView(updated, pid if isinstance(pid, int) else None,
                       MappingProxyType({name: _backend(entry) for name, entry in backends.items()}),
                       MappingProxyType(held))


def read_gateway(path, now_s: float, fresh_s: float = FRESH_S) -> GatewayView | None:
    """gateway_view of the file at `path` (None when missing, unreadable or stale)."""
    import json
    from pathlib import Path

    try:
        document = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return gateway_view(document, now_s, fresh_s)
