"""Errors as HTTP responses: every ``TollgateError`` (``gateway.errors``), FastAPI's
validation errors, unknown routes and any unexpected exception become an OpenAI-shaped body
``{"error": {"message", "type", "param", "code"}}`` with the right status and the request id.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import DependencyUnavailable, InvalidRequest, NotFound, TollgateError
from gateway.store.database import is_outage

log = logging.getLogger("tollgate.errors")


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
        return unexpected_response(exc, _request_id(request))


def unexpected_response(exc: BaseException, rid: str | None) -> JSONResponse:
    """An exception no handler claimed: 503 with retry-after when the store is down or its
    pool exhausted, else a 500 that quotes the request id (and logs the traceback once)."""
    if is_outage(exc):  # the store is down or its pool exhausted: retry soon, not a bug
        log.warning("store unavailable (request %s): %s", rid, exc)
        return error_response(
            DependencyUnavailable("the gateway's store is unavailable; retry shortly"), rid
        )
    log.error("unhandled error (request %s)", rid, exc_info=exc)
    err = TollgateError(f"internal error; quote request id {rid} when reporting it")
    return error_response(err, rid)
