"""Bearer-key checks. Keys come resolved (baremetal.apikeys) and are compared in constant time; neither
the keys nor what a client offered are ever logged or echoed."""

from __future__ import annotations

from baremetal.config.api_keys import key_matches


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def authorized(authorization: str | None, keys: list[str]) -> bool:
    """True when no keys are configured or the header carries one of them."""
    if not keys:
        return True
    token = bearer_token(authorization)
    return token is not None and key_matches(token, keys)
