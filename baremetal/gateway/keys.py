"""The gateway's key table: which key a request carries, under which name, for which models, with which limits.

Built from the stack's [api] (`key_table`, which resolves env:/file: specs) and never changed afterwards:
a reload builds a new table and swaps it in (the limits' counters live in the Limiter, by key name, so
they survive). Keys are kept only as SHA-256 digests and compared with hmac.compare_digest against every
entry: the time taken says neither which key was close nor how long the keys are.
Clients send `Authorization: Bearer KEY` (OpenAI's SDKs) or `x-api-key: KEY` (Anthropic's).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from baremetal.config.api_keys import key_digest, resolve_key_spec
from baremetal.config.model import Api
from baremetal.config.named_keys import UNNAMED
from baremetal.errors import BaremetalError


@dataclass(frozen=True)
class KeyIdentity:
    """Who a request is: a key name (UNNAMED for api_keys) with its models and limits."""

    name: str = UNNAMED
    models: frozenset[str] | None = None        # None: every model
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    @property
    def limited(self) -> bool:
        return any(limit is not None for limit in (self.requests_per_minute, self.tokens_per_minute,
                                                   self.max_concurrent))


OPEN = KeyIdentity()            # no key configured: everyone, unnamed, unlimited


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class KeyTable:
    """Key digests and who each one is."""

    def __init__(self, entries: list[tuple[bytes, KeyIdentity]]):
        self.entries = tuple(entries)

    @property
    def open(self) -> bool:
        """No key configured: every request is let in, as OPEN."""
        return not self.entries

    def identify(self, authorization: str | None, api_key: str | None = None) -> KeyIdentity | None:
        """The identity of the key a request offers, None when it offers none or a wrong one."""
        if self.open:
            return OPEN
        token = bearer_token(authorization) or (api_key.strip() if api_key else None)
        if not token:
            return None
        digest = key_digest(token)
        found = None
        for known, identity in self.entries:          # every entry, always: no early exit
            if hmac.compare_digest(digest, known) and found is None:
                found = identity
        return found

    def describe(self) -> str:
        """For the log: how many keys, and their names (never a key)."""
        if self.open:
            return "no API key required"
        names = self.names()
        return f"{len(self.entries)} API key(s) required" + (f" (named: {', '.join(names)})" if names else "")

    def hex_digests(self) -> list[str]:
        """The keys' SHA-256 digests in hex, sorted: what of them goes into a settings record."""
        return sorted(digest.hex() for digest, _ in self.entries)

    def names(self) -> list[str]:
        """The [[api.key]] names."""
        return sorted({identity.name for _, identity in self.entries if identity.name != UNNAMED})


def key_table(api: Api) -> KeyTable:
    """Resolve every key of `api` (env:VAR, file:PATH); a missing variable or file, or one key under two
    names, is an error naming the field (the gateway then does not start)."""
    entries: list[tuple[bytes, KeyIdentity]] = []
    where: dict[bytes, str] = {}

    def add(keys: list[str], identity: KeyIdentity, field: str) -> None:
        for key in keys:
            digest = key_digest(key)
            if digest in where and where[digest] != field:
                raise BaremetalError(f"{field}: one of its keys is also a key of {where[digest]}; one key, one "
                                     "name (else its requests could not be told apart)")
            where.setdefault(digest, field)
            entries.append((digest, identity))

    for spec in api.api_keys:
        add(resolve_key_spec(spec), OPEN, "api.api_keys")
    for index, entry in enumerate(api.named_keys):
        field = f"api.key[{index}] ({entry.name})"
        identity = KeyIdentity(entry.name, frozenset(entry.models) if entry.models is not None else None,
                               entry.requests_per_minute, entry.tokens_per_minute, entry.max_concurrent)
        add(resolve_key_spec(entry.key, field), identity, field)
    return KeyTable(entries)
