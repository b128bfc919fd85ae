"""The gateway's one error hierarchy and its rendering as OpenAI-shaped error bodies.

Every failure a client can see is a ``TollgateError`` subclass carrying the HTTP status, the
OpenAI ``type`` and ``code``, and a message that says what to fix. Handlers installed by
``install_error_handlers`` turn these, FastAPI's validation errors, unknown routes and any
unexpected exception into ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tollgate.errors")


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


def error_response(exc: TollgateError, request_id: str | None = None) -> JSONResponse:
    headers = dict(exc.headers)
    if request_id:
        headers["x-tollgate-request-id"] = request_id
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON: " + str(first.get("msg", "")), None
    if first.get("type") == "missing":
        return f"missing required parameter: {param}", param
    msg = str(first.get("msg", "invalid value"))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"invalid value for {param or 'body'}: {msg}{more}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TollgateError)
    async def _tollgate(request: Request, exc: TollgateError) -> JSONResponse:
        return error_response(exc, _request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        return error_response(InvalidRequest(message, param=param), _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err: TollgateError
        if exc.status_code == 404:
            err = NotFound(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            err = InvalidRequest(f"method {request.method} is not allowed on {request.url.path}")
            err.status = 405
        else:
            err = TollgateError(str(exc.detail))
            err.status = exc.status_code
        return error_response(err, _request_id(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = _request_id(request)
        log.exception("unhandled error (request %s)", rid)
        err = TollgateError(f"internal error; quote request id {rid} when reporting it")
        return error_response(err, rid)
