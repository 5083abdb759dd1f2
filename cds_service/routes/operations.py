"""Probes for the orchestrator (open) and Prometheus metrics (bearer token, when served)."""

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cds_service.auth import secret_matches
from cds_service.deps import Wired
from cds_service.errors import CDSError, OperationOutcome
from cds_service.metrics import CONTENT_TYPE

router = APIRouter(tags=["Operations"])


@router.get("/health")
async def health(wired: Wired) -> dict[str, str | list[str]]:
    """Liveness: the process is up and its rule set compiled (and which rules are silent)."""
    triage = wired.service.triage
    return {
        "status": "ok",
        "ruleset": triage.knowledge.version,
        "silent_rules": triage.silent_rules,
    }


@router.get("/ready", responses={503: {"model": OperationOutcome, "description": "Not ready"}})
async def ready(wired: Wired) -> dict[str, str]:
    """Readiness: rules compiled and the database reachable."""
    if not await anyio.to_thread.run_sync(wired.store.ping):
        raise CDSError.of(503, "the database is not reachable")
    return {"status": "ready", "ruleset": wired.service.triage.knowledge.version}


metrics_router = APIRouter()
_bearer = HTTPBearer(auto_error=False)


@metrics_router.get("/metrics", include_in_schema=False)
async def prometheus(
    wired: Wired,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
    """Prometheus metrics: latency per service, cards by indicator, rules fired, errors.

    Open in try-it mode; otherwise only with the configured CDS_METRICS_TOKEN.
    """
    token = wired.settings.metrics_token
    given = credentials.credentials if credentials else None
    if token and not secret_matches(given, token):
        raise CDSError.of(401, "metrics need the configured bearer token")
    return Response(wired.metrics.exposition(), media_type=CONTENT_TYPE)
