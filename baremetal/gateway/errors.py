"""Errors in OpenAI's format: `{"error": {"message", "type", "param", "code"}}`, with an HTTP status.

Every failure a client can see is a GatewayError; the app turns it into JSON, never into a traceback.
"""

from __future__ import annotations

import json


class GatewayError(Exception):
    """A request that cannot be served; `status` is the HTTP status, the rest is OpenAI's error object."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.headers = headers            # extra response headers (Retry-After on a 429)

    def payload(self) -> dict:
        """The JSON body OpenAI's clients parse (the openai SDK reads error.message)."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param,
                          "code": self.code}}

    def body(self) -> bytes:
        return json.dumps(self.payload(), ensure_ascii=False).encode()

    def anthropic_body(self) -> bytes:
        """The same error in Anthropic's shape, for its messages API (the anthropic SDK reads error.message)."""
        kind = ANTHROPIC_TYPES.get(self.status, "api_error" if self.status >= 500 else "invalid_request_error")
        return json.dumps({"type": "error", "error": {"type": kind, "message": self.message}},
                          ensure_ascii=False).encode()


ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                   502: "api_error", 503: "overloaded_error", 529: "overloaded_error"}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    """400: the request itself is wrong (bad JSON, wrong types, unsupported values)."""
    return GatewayError(400, message, "invalid_request_error", code, param)


def unauthorized() -> GatewayError:
    """401 with OpenAI's wording for a missing or wrong key (the key offered is never echoed)."""
    return GatewayError(401, "Incorrect or missing API key. Send it as 'Authorization: Bearer KEY'.",
                        "invalid_request_error", "invalid_api_key")


def model_not_found(model: str, known: list[str]) -> GatewayError:
    """404 naming the model and listing those served, so a typo is obvious."""
    served = ", ".join(sorted(known)) or "none"
    return GatewayError(404, f"The model {model!r} does not exist on this node. Models served: {served}.",
                        "invalid_request_error", "model_not_found", "model")


def unavailable(model: str, reasons: list[str]) -> GatewayError:
    """503: the model exists but no backend can take the request now."""
    why = "; ".join(reasons) if reasons else "no backend"
    return GatewayError(503, f"No backend of model {model!r} is available right now ({why}). Retry later.",
                        "service_unavailable", "model_unavailable", "model")


def gateway_timeout(message: str) -> GatewayError:
    """504: a backend took the request, then sent nothing for longer than api.backend_idle_timeout."""
    return GatewayError(504, message, "upstream_error", "gateway_timeout")


def bad_gateway(message: str) -> GatewayError:
    """502: a backend failed while answering (crashed, reset the connection, sent garbage)."""
    return GatewayError(502, message, "upstream_error", "bad_gateway")
