"""The CDS committee's read API and dashboard: what the rules did, what clinicians did with them.

Protected by its own bearer token (CDS_ADMIN_TOKEN), never a CDS client's JWT: with none
configured every call is refused. The page itself holds no data; it asks for the token.
"""

import re
from datetime import date
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator

from cds_service.analytics import FeedbackRow, Report, feedback_rows, report
from cds_service.auth import secret_matches
from cds_service.deps import Wired
from cds_service.errors import CDSError, OperationOutcome
from cds_service.routes.pages import STATIC

_bearer = HTTPBearer(auto_error=False, description="The admin token (CDS_ADMIN_TOKEN)")


def admin(
    wired: Wired,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the request carries the configured admin token."""
    given = credentials.credentials if credentials else None
    if not secret_matches(given, wired.settings.admin_token):
        raise CDSError.of(401, "the admin API needs the configured admin token")


router = APIRouter(
    prefix="/admin",
    tags=["Committee"],
    dependencies=[Depends(admin)],
    responses={401: {"model": OperationOutcome, "description": "No or a wrong admin token"}},
)


def _calendar_date(value: object) -> object:
    """Only `YYYY-MM-DD` (pydantic would also read `0` or a datetime as a date)."""
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a date is written YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_calendar_date)]
Since = Annotated[Day | None, Query(description="First day (UTC) included, YYYY-MM-DD")]
Until = Annotated[Day | None, Query(description="First day (UTC) no longer included, YYYY-MM-DD")]


@router.get("/report")
async def committee_report(wired: Wired, since: Since = None, until: Until = None) -> Report:
    """Per rule, service, indicator and week: evaluations, cards issued (and would-be cards of
    silent rules), accepted, overridden by reason, ignored; rates and time to feedback."""
    modes = wired.service.triage.modes
    return await anyio.to_thread.run_sync(report, wired.store.engine, since, until, modes)


@router.get("/feedback")
async def feedback_export(
    wired: Wired,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[FeedbackRow]:
    """The feedback received on cards issued in the period, newest first (paged)."""
    return await anyio.to_thread.run_sync(
        feedback_rows, wired.store.engine, since, until, limit, offset
    )


page_router = APIRouter(include_in_schema=False)


@page_router.get("/admin")
async def dashboard() -> FileResponse:
    """The committee dashboard (static; it loads /admin/report with the token typed in)."""
    return FileResponse(STATIC / "admin.html")
