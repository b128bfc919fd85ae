"""OpenTelemetry traces of requests and their attempts, exported over OTLP/HTTP (protobuf).

Built only when the standard ``OTEL_*`` variables name an endpoint (``Settings.telemetry``);
otherwise ``build_tracing`` returns None, the OpenTelemetry SDK is never imported and no request
pays for tracing. Spans follow the GenAI semantic conventions: one SERVER span per request
(``gen_ai.operation.name``, ``gen_ai.request.model`` as the client asked, ``gen_ai.response.model``
of the backend that answered, summed ``gen_ai.usage.*``) and one CLIENT child span per attempt
(``gen_ai.system``, request/response model, token usage, ``error.type``), both with Tollgate's
own ``tollgate.policy``, ``tollgate.backend``, ``tollgate.cost_usd`` and ``tollgate.task_id``.
Spans are written when the request ends, from the attempt rows the store gets (their own start
and end times), and a caller's W3C ``traceparent`` makes the request span its child.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway import __version__
from gateway.request_record import RequestRecord
from gateway.settings import TelemetrySettings

log = logging.getLogger("tollgate.telemetry")

OPERATION = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
# litellm provider prefixes → gen_ai.system values of the semantic conventions
SYSTEMS = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "anthropic": "anthropic",
    "azure": "az.ai.openai",
    "azure_ai": "az.ai.inference",
    "bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "cohere": "cohere",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "xai",
    "perplexity": "perplexity",
    "ibm": "ibm.watsonx.ai",
    "watsonx": "ibm.watsonx.ai",
}


def gen_ai_system(model: str) -> str:
    """The provider of a litellm model string (``openai/gpt-4o`` → ``openai``)."""
    provider, sep, _ = model.partition("/")
    if not sep:
        return "openai"  # litellm's default provider for a bare model name
    return SYSTEMS.get(provider, provider)


def _bare(model: str | None) -> str | None:
    return model.partition("/")[2] or model if model else model


def _ns(value: Any) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000) * 1000
    return None


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


class Tracing:
    """This app's tracer provider (not the process-global one) and its OTLP/HTTP exporter."""

    def __init__(self, cfg: TelemetrySettings) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create(
            {
                "service.name": cfg.service_name,
                "service.version": __version__,
                **cfg.resource_attributes,
            }
        )
        self.provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=cfg.traces_endpoint, headers=cfg.headers or None)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("tollgate", __version__)
        self.propagator = TraceContextTextMapPropagator()

    def emit(self, record: RequestRecord, headers: Mapping[str, str], end_ns: int) -> None:
        """Write the request's span and one child span per attempt."""
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        s = record.summary()
        operation = OPERATION.get(s["endpoint"] or "")
        name = (
            f"{operation} {record.requested_model}"
            if operation and record.requested_model
            else f"{record.method} {record.path}"
        )
        cost = s["cost"]
        error = record.error_type or s["attempt_error"]
        span = self.tracer.start_span(
            name,
            context=self.propagator.extract(carrier=dict(headers)),
            kind=SpanKind.SERVER,
            start_time=record.started_ns,
            attributes=_clean(
                {
                    "http.request.method": record.method,
                    "url.path": record.path,
                    "http.response.status_code": record.status,
                    "gen_ai.operation.name": operation,
                    "gen_ai.request.model": record.requested_model,
                    "gen_ai.response.model": _bare(s["model"]),
                    "gen_ai.system": gen_ai_system(s["model"]) if s["model"] else None,
                    "gen_ai.usage.input_tokens": s["prompt_tokens"] if s["attempts"] else None,
                    "gen_ai.usage.output_tokens": s["completion_tokens"] if s["attempts"] else None,
                    "tollgate.request_id": record.request_id,
                    "tollgate.task_id": s["task_id"],
                    "tollgate.tenant_id": s["tenant"],
                    "tollgate.policy": s["policy"],
                    "tollgate.backend": s["backend"],
                    "tollgate.attempts": s["attempts"],
                    "tollgate.cost_usd": float(cost)
                    if cost is not None and s["attempts"]
                    else None,
                    "error.type": error,
                }
            ),
        )
        parent = trace.set_span_in_context(span)
        for row in record.attempts:
            model = str(row.get("model") or "")
            failed = row.get("status") not in ("ok",)
            child = self.tracer.start_span(
                f"{operation or 'call'} {_bare(model)}",
                context=parent,
                kind=SpanKind.CLIENT,
                start_time=_ns(row.get("created_at")) or record.started_ns,
                attributes=_clean(
                    {
                        "gen_ai.operation.name": operation,
                        "gen_ai.system": gen_ai_system(model),
                        "gen_ai.request.model": _bare(model),
                        "gen_ai.response.model": _bare(model) if not failed else None,
                        "gen_ai.usage.input_tokens": row.get("prompt_tokens"),
                        "gen_ai.usage.output_tokens": row.get("completion_tokens"),
                        "tollgate.backend": row.get("backend"),
                        "tollgate.policy": row.get("policy"),
                        "tollgate.task_id": row.get("task_id"),
                        "tollgate.attempt": row.get("attempt"),
                        "tollgate.attempt_status": row.get("status"),
                        "tollgate.usage_source": row.get("usage_source"),
                        "tollgate.ttft_ms": row.get("ttft_ms"),
                        "tollgate.cost_usd": (
                            float(row["cost_usd"]) if row.get("cost_usd") is not None else None
                        ),
                        "http.response.status_code": row.get("http_status"),
                        "error.type": row.get("error_type"),
                    }
                ),
            )
            if failed:
                child.set_status(Status(StatusCode.ERROR, str(row.get("error_type") or "")))
            child.end(end_time=_ns(row.get("finished_at")) or end_ns)
        if record.status >= 500 or (record.status == 0):
            span.set_status(Status(StatusCode.ERROR, error or "server error"))
        span.end(end_time=end_ns)

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Export what is buffered, then stop (the app's shutdown)."""
        try:
            self.provider.force_flush(timeout_ms)
        finally:
            self.provider.shutdown()


def build_tracing(cfg: TelemetrySettings | None) -> Tracing | None:
    """The app's tracing, or None when no OTLP endpoint is configured (nothing imported)."""
    if cfg is None:
        return None
    if cfg.protocol != "http/protobuf":
        log.warning(
            "OTLP protocol %r is not supported (only http/protobuf): traces are not exported",
            cfg.protocol,
        )
        return None
    tracing = Tracing(cfg)
    log.info("exporting traces over OTLP/HTTP to %s", cfg.traces_endpoint)
    return tracing
