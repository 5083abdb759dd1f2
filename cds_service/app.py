"""The HTTP service: `create_app` builds the objects from settings and wires them to the routes.

No route here: they live in `routes/`, and call the objects `deps` hands them.
"""

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from cds_service import __version__, collector
from cds_service.auth import Authenticator
from cds_service.deps import Wiring
from cds_service.errors import CDSError, Issue, Unavailable, outcome_response, validation_issues
from cds_service.fhir_client import FetchPolicy
from cds_service.headers import SecurityHeaders
from cds_service.hooks import HOOKS, HookRegistry
from cds_service.knowledge import load_knowledge
from cds_service.limits import Admission, RequestLimits
from cds_service.logs import RequestLog, configure_logging
from cds_service.metrics import Metrics
from cds_service.openapi import openapi_document
from cds_service.routes import admin, cds_hooks, operations, pages
from cds_service.safety import Monitor
from cds_service.service import CDSService
from cds_service.settings import Settings
from cds_service.storage import Store
from cds_service.triage import Triage

log = logging.getLogger("cds_service")

RETRY_AFTER_SECONDS = 30


def create_app(settings: Settings | None = None, hooks: HookRegistry = HOOKS) -> FastAPI:
    """Build the app: load and compile the knowledge base (a broken rule file stops here)."""
    settings = settings or Settings()
    settings.check_serving()
    if not logging.getLogger().handlers:  # a uvicorn worker process: set up the JSON logs
        configure_logging(settings.log_level)
    wiring = _wire(settings, hooks)
    _log_trust(settings)
    knowledge = wiring.service.triage.knowledge
    log.info("rule set %s %s loaded", knowledge.manifest.name, knowledge.version)

    app = FastAPI(
        title="spine-cds",
        version=__version__,
        summary="CDS Hooks 2.0 service: back-pain red flags and specialist referrals",
        docs_url=None,  # pages.docs_router serves /docs from vendored Swagger UI, offline
        redoc_url=None,
        redirect_slashes=False,  # a redirect would be built from the request's Host
        lifespan=_housekeeping(wiring.store, settings),
    )
    app.state.wiring = wiring
    _add_middleware(app, settings, wiring.metrics)
    _add_error_handlers(app, wiring.metrics)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    app.include_router(cds_hooks.router)
    app.include_router(operations.router)
    if settings.metrics_token or settings.auth_disabled:
        app.include_router(operations.metrics_router)
    else:
        log.info("/metrics is not served: set CDS_METRICS_TOKEN to have Prometheus scrape it")
    if not settings.admin_token:
        log.info("the committee API (/admin/report) refuses every call: set CDS_ADMIN_TOKEN")
    app.include_router(pages.router)
    app.include_router(admin.router)
    app.include_router(admin.page_router)
    if settings.pages_on:
        app.include_router(pages.playground_router)
        app.include_router(pages.docs_router)
    queries = wiring.service.triage.queries
    app.openapi = lambda: openapi_document(app, queries, hooks)  # type: ignore[method-assign]
    # The start-up objects out of the collector's reach (full collections then scan only
    # per-request garbage, which keeps p99 down), and its threshold (`collector.py`).
    collector.configure()
    return app


def _wire(settings: Settings, hooks: HookRegistry) -> Wiring:
    """The objects of one app, from its settings."""
    knowledge = load_knowledge(settings.rules_dir, hooks)
    triage = Triage(knowledge, hooks, settings.rule_modes)
    store = Store(settings.database_url, settings.migrates_on_start, settings.store_sync_seconds)
    store.check_schema()  # a store behind this version's schema: refuse to start, saying so
    log.info("store: %s", store.location)
    if store.syncs:
        log.info(
            "store: commits on disk within %g s (CDS_STORE_SYNC_SECONDS; an OS crash or power "
            "loss can lose the last %g s of audit and feedback, a crash of the service none)",
            store.sync_seconds,
            store.sync_seconds,
        )
    metrics = Metrics()
    fetch = FetchPolicy(
        fhir_servers=[],  # set per caller, from its issuer
        timeout=settings.fhir_timeout_seconds,
        max_pages=settings.fhir_max_pages,
        allow_private=settings.fhir_allow_private,
        deadline=settings.fhir_deadline_seconds,
        max_answer_bytes=settings.fhir_max_answer_bytes,
    )
    service = CDSService(
        triage,
        store,
        store,
        metrics,
        fetch,
        settings.max_record_entries,
        settings.today,
        settings.pseudonyms(),
        Monitor.of(knowledge, settings.safety_window_days),
    )
    authenticator = Authenticator(
        settings.issuers(), settings.jwt_leeway_seconds, store.first_use, settings.public_base_url
    )
    return Wiring(settings, service, store, metrics, authenticator)


def _log_trust(settings: Settings) -> None:
    """Say at start-up who the service trusts, and loudly when that is insecure."""
    if settings.auth_disabled:
        log.warning("authentication is OFF (CDS_AUTH_DISABLED=true): try-it mode, never production")
    elif settings.trust_sandbox:
        log.warning(
            "INSECURE: trusting the public CDS Hooks sandbox (CDS_TRUST_SANDBOX=true); its "
            "signing key is published in its repository, so anyone can sign as it: try-it only"
        )
    elif not settings.trusted_issuers:
        log.warning(
            "no trusted issuer: every CDS Hooks call is refused with 401 until one is set, e.g. "
            'CDS_TRUSTED_ISSUERS=\'{"https://ehr.example": {"jwks_url": '
            '"https://ehr.example/jwks.json", "fhir_servers": ["https://ehr.example/fhir"]}}\''
        )


def _add_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Outermost last: CORS, request log, security headers, admission, body limits."""
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        prefix="/cds-services/",
        on_reject=metrics.error,
        body_timeout=settings.body_timeout_seconds,
    )
    app.add_middleware(
        Admission,
        in_flight=settings.max_in_flight,
        queued=settings.max_queued,
        prefix="/cds-services/",
        on_reject=metrics.error,
    )
    app.add_middleware(
        SecurityHeaders,
        frame_ancestors=settings.frame_ancestors,
        page_sources=_page_sources(settings),
    )
    app.add_middleware(RequestLog)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )


def _page_sources(settings: Settings) -> dict[str, dict[str, str]]:
    """Per page, the CSP sources it needs besides the service's own: the SMART review page calls
    the EHR's FHIR and authorization servers."""
    return {"/review": {"connect-src": " ".join(["'self'", *settings.review_origins()])}}


def _housekeeping(
    store: Store, settings: Settings
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: purge what is past retention now and every purge interval; put the
    store's commits on disk every `store.sync_seconds` (if it waits for that) and at the end."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def purge_forever() -> None:
            while True:
                try:
                    deleted = await anyio.to_thread.run_sync(
                        store.purge, settings.audit_retention_days, settings.feedback_retention_days
                    )
                    log.info("store purged past retention: %s", deleted)
                except Unavailable as exc:
                    log.error("store purge failed: %s", exc)
                await anyio.sleep(settings.purge_interval_seconds)

        async def sync_forever() -> None:
            while True:
                await anyio.sleep(store.sync_seconds)
                await _synced(store)

        async with anyio.create_task_group() as group:
            if settings.purge_interval_seconds > 0:
                group.start_soon(purge_forever)
            if store.syncs:
                group.start_soon(sync_forever)
            yield
            group.cancel_scope.cancel()
        if store.syncs:
            await _synced(store)

    return lifespan


async def _synced(store: Store) -> None:
    """`store.sync()` in a worker thread (a file sync can take milliseconds); a failure is
    logged (the store's readiness says it too)."""
    try:
        await anyio.to_thread.run_sync(store.sync)
    except Unavailable as exc:
        log.error("store sync failed: %s", exc)


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every error answers with an OperationOutcome, and is counted."""

    def outcome(
        status: int, issues: list[Issue], headers: Mapping[str, str] | None = None
    ) -> Response:
        metrics.error(status)
        return outcome_response(status, issues, headers)

    @app.exception_handler(CDSError)
    async def cds_error(_: Request, exc: CDSError) -> Response:
        return outcome(exc.status, list(exc.issues))

    @app.exception_handler(Unavailable)
    async def unavailable(_: Request, exc: Unavailable) -> Response:
        log.error("database unavailable: %s", exc)
        issue = Issue("the database is unavailable; retry later")
        return outcome(503, [issue], {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        errors = [{**error, "loc": tuple(error["loc"])[1:]} for error in exc.errors()]
        return outcome(400, validation_issues(errors))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        return outcome(exc.status_code, [Issue(str(exc.detail))], exc.headers)
