"""The HTTP service: a FastAPI app built from settings by `create_app`."""

import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import anyio
import orjson
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from cds_service import __version__
from cds_service.auth import Authenticator
from cds_service.errors import (
    CDSError,
    Issue,
    OperationOutcome,
    Unavailable,
    format_path,
    operation_outcome,
)
from cds_service.fhir_client import FetchPolicy, complete_prefetch
from cds_service.headers import SecurityHeaders
from cds_service.knowledge import HookName, load_knowledge
from cds_service.limits import Admission, RequestLimits
from cds_service.logs import RequestLog, configure_logging
from cds_service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from cds_service.metrics import Metrics
from cds_service.models import CDSResponse, Discovery, FeedbackRequest, HookRequest, dump
from cds_service.pages import add_pages
from cds_service.prefetch import read_context
from cds_service.service import Triage, today_utc
from cds_service.settings import Settings
from cds_service.storage import Store, UnknownCards

log = logging.getLogger("cds_service")

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OperationOutcome, "description": description}
    for status, description in (
        (400, "Malformed JSON, missing fields or invalid FHIR; the issue names the path"),
        (401, "Missing or invalid JWT (no details given)"),
        (404, "Unknown service"),
        (412, "Required prefetch data is missing and cannot be obtained"),
        (413, "Request body too large"),
        (415, "Request body is not JSON"),
    )
}


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


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app: load and compile the knowledge base (a broken rule file stops here)."""
    settings = settings or Settings()
    if not logging.getLogger().handlers:  # a uvicorn worker process: set up the JSON logs
        configure_logging(settings.log_level)
    triage = Triage(load_knowledge(settings.rules_dir))
    store = Store(settings.database_url, migrate=settings.migrate_on_start)
    issuers = settings.issuers()
    authenticator = Authenticator(issuers, settings.jwt_leeway_seconds, store.first_use)
    _log_trust(settings)

    def public_base(request: Request) -> str:
        """The base URL clients call this service at (behind a proxy: the configured one)."""
        return (settings.public_base_url or str(request.base_url)).rstrip("/")

    async def authenticate(request: Request) -> list[str]:
        """Every CDS Hooks endpoint needs a valid JWT (CDS Hooks 2.0, trusting clients).

        Returns the fhirServer prefixes this caller may send the service to (its issuer's).
        """
        if settings.auth_disabled:
            return settings.fhir_servers
        audience = public_base(request) + request.url.path
        claims = await authenticator.verify(request.headers.get("authorization"), audience)
        return issuers[claims["iss"]].fhir_servers

    secured = [Depends(authenticate)]
    metrics = Metrics()

    # One evaluation at a time per process: threads add no throughput under the GIL and would
    # only lengthen the tail (engine-notes 7); scale out with worker processes instead.
    limiter = anyio.CapacityLimiter(1)
    log.info("rule set %s %s loaded", triage.knowledge.manifest.name, triage.knowledge.version)

    app = FastAPI(
        title="spine-cds",
        version=__version__,
        summary="CDS Hooks 2.0 service: back-pain red flags and specialist referrals",
        docs_url="/docs" if settings.pages_on else None,
        redoc_url="/redoc" if settings.pages_on else None,
        lifespan=_purging(store, settings),
    )
    app.router.route_class = _OrjsonRoute
    _add_error_handlers(app, metrics)
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        prefix="/cds-services/",
        on_reject=metrics.error,
    )
    app.add_middleware(
        Admission,
        in_flight=settings.max_in_flight,
        queued=settings.max_queued,
        prefix="/cds-services/",
        on_reject=metrics.error,
    )
    app.add_middleware(SecurityHeaders, frame_ancestors=settings.frame_ancestors)
    app.add_middleware(RequestLog)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )

    add_operations(app, triage, store, metrics, _metrics_access(settings))
    add_pages(
        app,
        settings.examples_dir if settings.pages_on else None,
        store,
        settings.review_ttl_hours * 3600,
    )

    @app.get(
        "/cds-services",
        response_model=Discovery,
        response_model_exclude_none=True,
        dependencies=secured,
        responses={401: _ERRORS[401]},
    )
    async def discovery() -> Discovery:
        """CDS Hooks discovery: one service per hook."""
        return Discovery(services=triage.services())

    @app.post(
        "/cds-services/{service_id}",
        response_model=CDSResponse,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    async def call(
        service_id: HookName,
        body: HookRequest,
        request: Request,
        fhir_servers: Annotated[list[str], Depends(authenticate)],
    ) -> JSONResponse:
        """Evaluate a CDS Hooks request and answer with cards."""
        started = time.perf_counter()
        if body.hook != service_id:
            raise CDSError.of(
                400, f"hook {body.hook!r} does not match service {service_id!r}", "hook"
            )
        context = read_context(body, service_id)  # 400 before any fetch
        prefetch = await complete_prefetch(
            body,
            context.patientId,
            FetchPolicy(
                fhir_servers,
                settings.fhir_timeout_seconds,
                settings.fhir_max_pages,
                settings.fhir_allow_private,
                settings.fhir_deadline_seconds,
                settings.fhir_max_answer_bytes,
            ),
        )
        body = body.model_copy(update={"prefetch": prefetch})
        today = settings.today or today_utc()
        review_url = f"{public_base(request)}/review"
        evaluation = await anyio.to_thread.run_sync(
            triage.run, body, service_id, today, review_url, limiter=limiter
        )
        duration_ms = (time.perf_counter() - started) * 1000
        metrics.observe(service_id, duration_ms / 1000, evaluation.response, evaluation.rules_fired)
        response = dump(evaluation.response)
        try:
            await anyio.to_thread.run_sync(
                store.record_evaluation,
                body.hookInstance,
                service_id,
                triage.knowledge.version,
                evaluation.rules_fired,
                response["cards"],
                duration_ms,
            )
        except Unavailable as exc:
            # A documented choice: the clinician gets the cards; the audit gap is logged,
            # counted, and /ready turns 503 so traffic moves to a healthy replica.
            log.error("audit write failed (%s): cards sent without an audit record", exc)
            metrics.audit_failures.inc()
        return JSONResponse(response)  # already checked by the models: no second validation

    @app.post(
        "/cds-services/{service_id}/feedback",
        responses={**_ERRORS, 200: {"description": "Feedback stored (repeats are no-ops)"}},
        dependencies=secured,
    )
    async def feedback(service_id: HookName, body: FeedbackRequest) -> dict[str, int]:
        """Store the outcome of cards this service issued (CDS Hooks feedback)."""
        rows = [item.row() for item in body.feedback]
        try:
            await anyio.to_thread.run_sync(store.record_feedback, service_id, rows)
        except UnknownCards as exc:
            raise CDSError.of(400, f"unknown card uuid: {exc}", "feedback.card") from exc
        return {"received": len(rows)}

    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    # Move the start-up objects (modules, knowledge base, validators) out of the collector's
    # reach: full collections then scan only per-request garbage, which keeps p99 down.
    gc.freeze()
    # A 6 MB record allocates ~10^6 objects; with the default threshold (700) the collector ran
    # hundreds of times per request, over all of them. Measured on 20,000 Observations: parse and
    # triage 330 ms -> 197 ms with this threshold (docs/performance.md).
    gc.set_threshold(100_000, 50, 100)
    return app


def _metrics_access(settings: Settings) -> str | None:
    """The token /metrics requires: "" (open) in try-it mode, None when it is not served."""
    if settings.metrics_token:
        return settings.metrics_token
    if settings.auth_disabled:
        return ""
    log.info("/metrics is not served: set CDS_METRICS_TOKEN to have Prometheus scrape it")
    return None


def add_operations(
    app: FastAPI, triage: Triage, store: Store, metrics: Metrics, access: str | None
) -> None:
    """Probes, open to the orchestrator (no JWT); metrics as `access` says (see
    `_metrics_access`)."""

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process is up and its rule set compiled."""
        return {"status": "ok", "ruleset": triage.knowledge.version}

    @app.get("/ready", responses={503: {"model": OperationOutcome, "description": "Not ready"}})
    async def ready() -> dict[str, str]:
        """Readiness: rules compiled and the database reachable."""
        if not await anyio.to_thread.run_sync(store.ping):
            raise CDSError.of(503, "the database is not reachable")
        return {"status": "ready", "ruleset": triage.knowledge.version}

    if access is None:
        return

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(authorization: Annotated[str | None, Header()] = None) -> Response:
        """Prometheus metrics: latency per service, cards by indicator, rules fired, errors."""
        if access and not hmac.compare_digest(authorization or "", f"Bearer {access}"):
            raise CDSError.of(401, "metrics need the configured bearer token")
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI, without FastAPI's 422 responses: validation errors here are 400s."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        for path in document["paths"].values():
            for operation in path.values():
                operation["responses"].pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            document["components"]["schemas"].pop(name, None)
        app.openapi_schema = document
    return app.openapi_schema


def _outcome(
    status: int, issues: list[Issue], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(operation_outcome(status, issues), status_code=status, headers=headers)


RETRY_AFTER_SECONDS = 30


class _OrjsonRequest(Request):
    """Request bodies parsed with orjson: a fifth of the stdlib's time on a 200 KB record, and
    strict (no NaN or Infinity, no unpaired surrogates, a nesting limit): a 400 either way."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class _OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route


def _purging(
    store: Store, settings: Settings
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: purge what is past retention now and every purge interval."""

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

        async with anyio.create_task_group() as group:
            if settings.purge_interval_seconds > 0:
                group.start_soon(purge_forever)
            yield
            group.cancel_scope.cancel()

    return lifespan


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def outcome(
        status: int, issues: list[Issue], headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        metrics.error(status)
        return _outcome(status, issues, headers)

    @app.exception_handler(CDSError)
    async def cds_error(_: Request, exc: CDSError) -> JSONResponse:
        return outcome(exc.status, list(exc.issues))

    @app.exception_handler(Unavailable)
    async def unavailable(_: Request, exc: Unavailable) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        issue = Issue("the database is unavailable; retry later")
        return outcome(503, [issue], {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(err["loc"][:1] == ("path",) for err in errors):
            return outcome(404, [Issue("no such CDS service; see GET /cds-services")])
        return outcome(400, [_request_issue(err) for err in errors])

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return outcome(exc.status_code, [Issue(str(exc.detail))], exc.headers)


def _request_issue(error: dict[str, Any]) -> Issue:
    loc = tuple(error["loc"])
    if error["type"] == "json_invalid":
        return Issue(f"malformed JSON: {error.get('ctx', {}).get('error', error['msg'])}")
    return Issue(error["msg"], format_path("", loc[1:]) or None)
