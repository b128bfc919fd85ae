"""What a failed backend call means: every exception the pinned litellm can raise, mapped.

This module owns the translation from an exception raised while calling a backend (litellm's
own classes, the ``openai`` SDK's it wraps, and the ``httpx``/``aiohttp`` transport errors that
can slip through) into either an ``UpstreamFailure`` (the backend's answer or absence of one:
status, error type, retryable, the client's fault or not) or an ``InternalError`` (a bug in
our code or in litellm: never retried, never counted against a backend's circuit breaker).

``ERROR_MAP`` names a :class:`Kind` for every exception class of ``litellm.exceptions`` and
of the ``openai`` package; ``tests/unit/test_litellm_errors.py`` enumerates the installed
classes and fails when one is missing, so a litellm upgrade cannot add an unmapped class.

Two facts about litellm shape :func:`classify` beyond the table (checked against 1.104.5):

* litellm wraps *any* exception raised inside a call, our own ``TypeError`` included, in an
  ``APIConnectionError`` with status 500. The original stays in the exception chain
  (``__cause__``/``__context__``), so a chain that never reached an HTTP response or a
  transport and ends in a programming error is an internal error, not a backend failure.
* a refused connection comes back as ``InternalServerError`` (500) whose chain holds the
  transport error; it is reported as the connection error it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import Enum

import aiohttp
import httpx
import litellm.exceptions as lx
import openai
from litellm.llms.base_llm.chat.transformation import BaseLLMException
from litellm.types.router import RouterRateLimitError, RouterRateLimitErrorBasic

from gateway.backends.upstream import RETRYABLE_STATUSES, InternalError, UpstreamFailure


class Kind(Enum):
    """What a class of exception says about the backend call."""

    BY_STATUS = "by_status"  # the HTTP status the exception carries decides (STATUS_RULES)
    TIMEOUT = "timeout"
    CONNECTION = "connection_error"
    INVALID_RESPONSE = "invalid_response"  # the backend answered something that is no answer
    CONTEXT_WINDOW = "context_window_exceeded"  # a backend with a larger window may serve it
    CONTENT_POLICY = "content_policy_violation"  # the request itself is refused
    UNSUPPORTED_PARAMS = "unsupported_params"  # this backend lacks a parameter; others may not
    IMAGE_FETCH = "image_fetch_error"  # an image URL in the request could not be fetched
    GUARDRAIL = "blocked_by_guardrail"  # a litellm guardrail refused the request's content
    MISCONFIGURED = "backend_misconfigured"  # the backend's config (model, api_base) is wrong
    INTERNAL = "internal_error"  # a misuse of the library: our bug, not the backend's


#: (error_type, retryable, client_fault) per upstream HTTP status. Client faults are answered
#: to the client at once; 400/413/422 never count against a backend's breaker (dispatch).
STATUS_RULES: dict[int, tuple[str, bool, bool]] = {
    400: ("bad_request", False, True),
    401: ("authentication_error", False, False),  # the backend's key, not the client's
    402: ("payment_required", False, False),
    403: ("permission_denied", False, False),
    404: ("not_found", False, False),
    408: ("timeout", True, False),
    409: ("conflict", True, False),
    413: ("request_too_large", False, True),
    422: ("unprocessable_entity", False, True),
    425: ("too_early", True, False),
    429: ("rate_limited", True, False),
    500: ("server_error", True, False),
    502: ("bad_gateway", True, False),
    503: ("service_unavailable", True, False),
    504: ("timeout", True, False),  # a gateway timeout in front of the backend
}

#: Every exception class the pinned litellm (and the openai SDK under it) can raise, mapped.
#: Subclasses not listed resolve through their nearest listed base class (see ``kind_of``).
ERROR_MAP: dict[type[BaseException], Kind] = {
    # litellm.exceptions: the classes litellm's exception mapping raises
    lx.OpenAIError: Kind.BY_STATUS,
    lx.APIError: Kind.BY_STATUS,
    lx.MockException: Kind.BY_STATUS,
    lx.AuthenticationError: Kind.BY_STATUS,
    lx.PermissionDeniedError: Kind.BY_STATUS,
    lx.NotFoundError: Kind.BY_STATUS,
    lx.BadRequestError: Kind.BY_STATUS,  # carries 400, 413, 422 or any other 4xx
    lx.InvalidRequestError: Kind.BY_STATUS,
    lx.UnprocessableEntityError: Kind.BY_STATUS,
    lx.RateLimitError: Kind.BY_STATUS,
    lx.InternalServerError: Kind.BY_STATUS,
    lx.BadGatewayError: Kind.BY_STATUS,
    lx.ServiceUnavailableError: Kind.BY_STATUS,
    lx.MidStreamFallbackError: Kind.BY_STATUS,  # a stream broke; carries the original status
    lx.VectorStoreSearchError: Kind.BY_STATUS,
    lx.Timeout: Kind.TIMEOUT,
    lx.APIConnectionError: Kind.CONNECTION,
    lx.APIResponseValidationError: Kind.INVALID_RESPONSE,
    lx.JSONSchemaValidationError: Kind.INVALID_RESPONSE,
    lx.ContextWindowExceededError: Kind.CONTEXT_WINDOW,
    lx.ContentPolicyViolationError: Kind.CONTENT_POLICY,
    lx.UnsupportedParamsError: Kind.UNSUPPORTED_PARAMS,
    lx.ImageFetchError: Kind.IMAGE_FETCH,
    lx.RejectedRequestError: Kind.GUARDRAIL,
    lx.GuardrailRaisedException: Kind.GUARDRAIL,
    lx.BlockedPiiEntityError: Kind.GUARDRAIL,
    lx.ModifyResponseException: Kind.GUARDRAIL,
    lx.SensitiveDataRouteException: Kind.GUARDRAIL,
    lx.LiteLLMUnknownProvider: Kind.MISCONFIGURED,  # the backend's model names no provider
    lx.ModelNotMappedError: Kind.MISCONFIGURED,
    lx.BudgetExceededError: Kind.MISCONFIGURED,  # litellm's own budget, set in backend params
    BaseLLMException: Kind.BY_STATUS,  # a provider's raw error, should one escape the mapping
    # raised only by litellm's Router, which the gateway does not use (it runs its own retries,
    # fallbacks and breakers): seeing one means our code started calling the Router
    RouterRateLimitError: Kind.INTERNAL,
    RouterRateLimitErrorBasic: Kind.INTERNAL,
    # openai: the SDK litellm calls OpenAI-compatible servers with
    openai.OpenAIError: Kind.BY_STATUS,
    openai.APIError: Kind.BY_STATUS,
    openai.APIStatusError: Kind.BY_STATUS,
    openai.BadRequestError: Kind.BY_STATUS,
    openai.AuthenticationError: Kind.BY_STATUS,
    openai.OAuthError: Kind.BY_STATUS,
    openai.PermissionDeniedError: Kind.BY_STATUS,
    openai.NotFoundError: Kind.BY_STATUS,
    openai.ConflictError: Kind.BY_STATUS,
    openai.UnprocessableEntityError: Kind.BY_STATUS,
    openai.RateLimitError: Kind.BY_STATUS,
    openai.InternalServerError: Kind.BY_STATUS,
    openai.APIConnectionError: Kind.CONNECTION,
    openai.APITimeoutError: Kind.TIMEOUT,
    openai.APIResponseValidationError: Kind.INVALID_RESPONSE,
    openai.ContentFilterFinishReasonError: Kind.CONTENT_POLICY,
    openai.WebSocketConnectionClosedError: Kind.CONNECTION,
    openai.WebSocketQueueFullError: Kind.CONNECTION,
    # raised only by SDK helpers the adapter never calls (parse(), webhooks, module client):
    # seeing one means our code misused the library
    openai.LengthFinishReasonError: Kind.INTERNAL,
    openai.InvalidWebhookSignatureError: Kind.INTERNAL,
    openai._AmbiguousModuleClientUsageError: Kind.INTERNAL,
    # transports, should one escape litellm's wrapping (streams mostly)
    httpx.HTTPError: Kind.CONNECTION,
    httpx.TimeoutException: Kind.TIMEOUT,
    httpx.HTTPStatusError: Kind.BY_STATUS,
    httpx.DecodingError: Kind.INVALID_RESPONSE,
    httpx.TooManyRedirects: Kind.MISCONFIGURED,
    httpx.UnsupportedProtocol: Kind.MISCONFIGURED,
    httpx.InvalidURL: Kind.MISCONFIGURED,
    httpx.StreamError: Kind.INTERNAL,  # reading a body twice or after close: our misuse
    httpx.CookieConflict: Kind.INTERNAL,
    aiohttp.ClientError: Kind.CONNECTION,
    aiohttp.ClientResponseError: Kind.BY_STATUS,
    aiohttp.ContentTypeError: Kind.INVALID_RESPONSE,
    aiohttp.ClientPayloadError: Kind.INVALID_RESPONSE,
    aiohttp.ServerTimeoutError: Kind.TIMEOUT,
    aiohttp.InvalidURL: Kind.MISCONFIGURED,
    TimeoutError: Kind.TIMEOUT,  # asyncio.TimeoutError is the same class
    ConnectionError: Kind.CONNECTION,
    json.JSONDecodeError: Kind.INVALID_RESPONSE,
}

_LIBRARIES = ("litellm", "openai", "httpx", "httpcore", "aiohttp")
# exceptions that, at the bottom of a chain, mean a programming error rather than a backend
# problem; decoding errors are ValueErrors but say the backend sent bytes that do not parse
_BUGS = (
    TypeError,
    AttributeError,
    LookupError,
    NameError,
    AssertionError,
    NotImplementedError,
    RecursionError,
    ImportError,
    ArithmeticError,
    ValueError,
)
_DATA_ERRORS = (json.JSONDecodeError, UnicodeError)
# an exception in the chain that proves the backend answered with an HTTP status
_ANSWERED = (openai.APIStatusError, httpx.HTTPStatusError, aiohttp.ClientResponseError)
# transport trouble: the backend was not reached, or went away
_TRANSPORT = (httpx.TransportError, aiohttp.ClientConnectionError, ConnectionError, TimeoutError)
_TRANSPORT_TIMEOUT = (httpx.TimeoutException, aiohttp.ServerTimeoutError, TimeoutError)


def kind_of(exc_type: type[BaseException]) -> Kind | None:
    """The mapped kind of an exception class (its nearest mapped base class), or None."""
    for base in exc_type.__mro__:
        kind = ERROR_MAP.get(base)
        if kind is not None:
            return kind
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception below it (explicit cause, implicit context, or litellm's
    ``original_exception``), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        below = current.__cause__ or current.__context__
        original = getattr(current, "original_exception", None)
        if below is None and isinstance(original, BaseException):
            below = original
        current = below


def _is_bug(exc: BaseException) -> bool:
    if isinstance(exc, _DATA_ERRORS) or not isinstance(exc, _BUGS):
        return False
    return type(exc).__module__.split(".")[0] not in _LIBRARIES


def _status_of(exc: BaseException) -> int | None:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return str(message or exc or type(exc).__name__)


def retry_after(exc: BaseException) -> float | None:
    """The upstream's ``retry-after`` in seconds, when it sent one."""
    for source in (
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        getter = getattr(source, "get", None)
        if getter is None:
            continue
        try:
            value = getter("retry-after")
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            return None
    return None


def _by_status(exc: BaseException, status: int | None, message: str) -> UpstreamFailure:
    if status is None:
        return UpstreamFailure(message, status=None, error_type="connection_error", retryable=True)
    if status in STATUS_RULES:
        error_type, retryable, client_fault = STATUS_RULES[status]
    elif status >= 500:
        error_type, retryable, client_fault = "server_error", True, False
    else:  # another 4xx: this backend refuses; the next one in the chain may not
        error_type, retryable, client_fault = f"upstream_{status}", False, False
    wait = retry_after(exc) if status in RETRYABLE_STATUSES else None
    return UpstreamFailure(
        message,
        status=status,
        error_type=error_type,
        retryable=retryable,
        retry_after_s=wait,
        client_fault=client_fault,
    )


def _failure(kind: Kind, exc: BaseException, message: str) -> UpstreamFailure:
    if kind is Kind.BY_STATUS:
        return _by_status(exc, _status_of(exc), message)
    if kind is Kind.TIMEOUT:
        status = _status_of(exc)
        status = status if status in (408, 504) else 408
        return UpstreamFailure(message, status=status, error_type="timeout", retryable=True)
    if kind in (Kind.CONNECTION, Kind.INVALID_RESPONSE):
        return UpstreamFailure(message, status=None, error_type=kind.value, retryable=True)
    if kind is Kind.MISCONFIGURED:
        return UpstreamFailure(message, status=None, error_type=kind.value, retryable=False)
    # request-specific 400s: the next backend is tried unless the client itself is at fault
    client_fault = kind in (Kind.CONTENT_POLICY, Kind.IMAGE_FETCH, Kind.GUARDRAIL)
    return UpstreamFailure(
        message, status=400, error_type=kind.value, retryable=False, client_fault=client_fault
    )


def classify(exc: BaseException) -> UpstreamFailure | InternalError:
    """What ``exc``, raised while calling a backend, means; the caller raises the result."""
    if isinstance(exc, UpstreamFailure | InternalError):
        return exc
    kind = kind_of(type(exc))
    if kind is None or kind is Kind.INTERNAL:
        return InternalError(f"{type(exc).__name__} while calling a backend: {exc}")
    below = list(_chain(exc))[1:]
    if not any(isinstance(e, _ANSWERED) for e in below):
        # no HTTP answer underneath: a transport failure, or a bug litellm wrapped
        transport = next((e for e in below if isinstance(e, _TRANSPORT)), None)
        if transport is not None and kind is Kind.BY_STATUS:
            kind = Kind.TIMEOUT if isinstance(transport, _TRANSPORT_TIMEOUT) else Kind.CONNECTION
        elif kind is Kind.BY_STATUS and any(isinstance(e, _DATA_ERRORS) for e in below):
            kind = Kind.INVALID_RESPONSE  # a 200 whose body does not parse, reported as a 500
        elif transport is None and below and _is_bug(below[-1]):
            bug = below[-1]
            return InternalError(
                f"{type(bug).__name__} inside litellm's {type(exc).__name__}: {bug}"
            )
    return _failure(kind, exc, _message(exc))


__all__ = ["ERROR_MAP", "STATUS_RULES", "Kind", "classify", "kind_of", "retry_after"]
