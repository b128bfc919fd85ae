"""The gateway's one error hierarchy.

Every failure a client can see is a ``TollgateError`` subclass carrying the HTTP status, the
OpenAI ``type`` and ``code``, and a message that says what to fix; ``body()`` is its
OpenAI-shaped error body. Rendering them as HTTP responses (and FastAPI's validation errors,
unknown routes and unexpected exceptions alike) is the HTTP edge's job:
``gateway.http.errors``. Every layer raises these; this module imports no web framework.
"""

from __future__ import annotations

from typing import Any


class TollgateError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(TollgateError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class AuthenticationFailed(TollgateError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class PermissionDenied(TollgateError):
    status, type, code = 403, "permission_error", "forbidden"


class NotFound(TollgateError):
    status, type, code = 404, "invalid_request_error", "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(TollgateError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class BudgetExceeded(TollgateError):
    status, type, code = 429, "insufficient_quota", "budget_exceeded"


class RateLimited(TollgateError):
    """Over a requests- or tokens-per-minute limit: OpenAI's shape (``type`` is ``requests``
    or ``tokens``, ``code`` ``rate_limit_exceeded``) with ``retry-after`` (seconds) and
    ``retry-after-ms``; ``headers`` adds the ``x-ratelimit-*`` ones."""

    status, type, code = 429, "requests", "rate_limit_exceeded"

    def __init__(
        self, message: str, *, retry_after_ms: int, kind: str = "requests", **kw: Any
    ) -> None:
        headers = dict(kw.pop("headers", None) or {})
        headers["retry-after"] = str(max(1, -(-retry_after_ms // 1000)))
        headers["retry-after-ms"] = str(max(1, retry_after_ms))
        super().__init__(message, headers=headers, **kw)
        self.type = kind
        self.retry_after_ms = retry_after_ms


class UpstreamError(TollgateError):
    """Every backend in the chain failed; carries the last upstream status."""

    status, type, code = 502, "upstream_error", "upstream_failed"

    def __init__(self, message: str, *, status: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        if status is not None:
            self.status = status


class NoBackendAvailable(TollgateError):
    status, type, code = 503, "service_unavailable", "no_backend_available"


class DependencyUnavailable(TollgateError):
    """A dependency this request needs (shared state, the store) is unreachable: retry soon."""

    status, type, code = 503, "service_unavailable", "dependency_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5, **kw: Any) -> None:
        kw.setdefault("headers", {"retry-after": str(retry_after_s)})
        super().__init__(message, **kw)
