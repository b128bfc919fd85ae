"""The app factory: ``create_app(settings)`` builds the FastAPI application; nothing at import."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from gateway import __version__
from gateway.auth import WeakAdminKey, check_admin_key
from gateway.backends.upstream import BackendCaller
from gateway.config import load_settings
from gateway.http import admin, anthropic, dashboard, docs, feedback, health, responses
from gateway.http import openai as api
from gateway.http.errors import install_error_handlers
from gateway.http.fast_routes import OpenAIFastRoutes
from gateway.http.middleware import GatewayMiddleware
from gateway.http.observe import ObserveMiddleware
from gateway.logs import configure_logging
from gateway.metrics import Metrics
from gateway.outcomes.hooks import RequestOutcomes
from gateway.outcomes.recording import drain_outcomes
from gateway.reload import Reloader, policy_version
from gateway.runtime import build_runtime
from gateway.serve.pipeline import Pipeline
from gateway.settings import Settings
from gateway.store.migrate import upgrade_database
from gateway.telemetry import build_tracing

log = logging.getLogger("tollgate.app")


class UnsafeBind(RuntimeError):
    """Refuse to expose the gateway beyond this host without an admin key."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to start with a weak admin key (whatever the bind), or on a non-loopback address
    without one or with anonymous access."""
    try:
        check_admin_key(settings.admin_key)
    except WeakAdminKey as exc:
        raise UnsafeBind(str(exc)) from None
    if is_loopback(settings.host):
        return
    if not settings.admin_key:
        raise UnsafeBind(
            f"refusing to listen on {settings.host}: a non-loopback address needs an admin key "
            "(set TOLLGATE_ADMIN_KEY), or bind to 127.0.0.1"
        )
    if settings.config.server.anonymous_tenant:
        raise UnsafeBind(
            f"refusing to listen on {settings.host} with server.anonymous_tenant set: anonymous "
            "access is only allowed on a loopback address"
        )


def _default_caller() -> BackendCaller:
    # heavy import (litellm): only when serving. OpenAI-compatible backends take the plain
    # HTTP fast path, the others litellm (gateway.backends.selector)
    from gateway.backends.selector import SelectingCaller

    return SelectingCaller()


def load_predictor(settings: Settings) -> Any:
    """The predictor service the policies use, or None when disabled or not needed."""
    cfg = settings.config
    if not cfg.predictor.enabled or (not cfg.policies and cfg.cache.mode != "semantic"):
        return None
    from gateway.serve.predictor_client import PredictorClient

    # worker processes, started (model loaded) by the lifespan's ``start()``
    return PredictorClient(
        cfg.predictor.artifact,
        workers=cfg.predictor.workers,
        threads=cfg.predictor.threads,
        device=cfg.predictor.device,
        max_batch=cfg.predictor.max_batch,
        cache_size=cfg.predictor.cache_size,
    )


def create_app_from_env() -> FastAPI:
    """The app of one worker process of ``tollgate serve --workers N``: uvicorn imports this
    factory in every worker, which reads its settings from the environment the CLI prepared
    (``TOLLGATE_CONFIG``, ``TOLLGATE_HOST``, ``TOLLGATE_PORT``, …)."""
    return create_app(load_settings())


def create_app(
    settings: Settings, *, caller: BackendCaller | None = None, predictor: Any = "config"
) -> FastAPI:
    """Build the gateway app. ``caller`` replaces the litellm adapter and ``predictor`` the
    configured predictor (tests inject theirs; ``None`` disables prediction)."""
    check_bind(settings)
    configure_logging()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.config.store.auto_migrate:
            await asyncio.to_thread(upgrade_database, settings.database_url)
        chosen = predictor
        if isinstance(chosen, str):
            chosen = await asyncio.to_thread(load_predictor, settings)
        if chosen is not None and hasattr(chosen, "start"):
            await chosen.start()
        runtime = await build_runtime(settings, caller or _default_caller(), metrics, chosen)
        app.state.runtime = runtime
        # the request pipeline, with the success side (validator outcomes, the judge) wired in
        app.state.pipeline = Pipeline(runtime, RequestOutcomes(runtime))
        reloader = Reloader(runtime)
        app.state.reloader = reloader
        reloader.start()
        log.info(
            "tollgate %s ready (state: %s, policies: %s, predictor: %s)",
            __version__,
            runtime.state.kind,
            policy_version(settings.config) or "none",
            getattr(chosen, "version", "off"),
        )
        # everything built so far (litellm's tables, the config, the app) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks millions of
        # objects (~0.4 s of CPU each, the largest per-request cost under load; see
        # bench/profile_pinned.py)
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await reloader.close()
            # verdicts being written and judge calls in flight finish before the store closes
            judge = runtime.config.judge
            await drain_outcomes((judge.timeout_s if judge else 0) + 5, runtime.writer)
            await runtime.close()

    app = FastAPI(
        title="Tollgate",
        version=__version__,
        description="Cost-aware, OpenAI-compatible LLM gateway",
        lifespan=lifespan,
        docs_url=None,  # gateway.http.docs serves the pages with bundled assets (no CDN)
        redoc_url=None,
        # gateway.telemetry owns tracing; FastAPI's own OpenTelemetry hooks otherwise look up
        # the global providers on every request (and would trace twice if one were set);
        # auto_configure off: FASTAPI_OTEL_AUTO_CONFIGURE must not install global providers
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    install_error_handlers(app)
    docs.install(app)
    app.include_router(api.router)
    app.include_router(anthropic.router)
    app.include_router(responses.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(feedback.router)
    app.include_router(dashboard.router)
    # innermost: valid OpenAI POSTs skip FastAPI's routing and dependency machinery
    app.add_middleware(OpenAIFastRoutes)
    # inside GatewayMiddleware (added last = outermost): it sees the request id and whole body
    app.add_middleware(ObserveMiddleware, tracing=build_tracing(settings.telemetry))
    app.add_middleware(
        GatewayMiddleware, max_body_bytes=settings.config.server.max_body_bytes, metrics=metrics
    )
    return app
