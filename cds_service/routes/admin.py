"""The CDS committee's read API and dashboard: what the rules did, what clinicians did with them.

Protected by its own bearer token (CDS_ADMIN_TOKEN), never a CDS client's JWT: with none
configured every call is refused. The page itself holds no data; it asks for the token.
"""

import re
from datetime import date
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator

from cds_service.analytics import (
    ClinicianReport,
    FeedbackRow,
    Report,
    RuleInfo,
    SafetyCase,
    clinician_report,
    feedback_rows,
    report,
    rule_book,
    safety_cases,
)
from cds_service.auth import secret_matches
from cds_service.deps import Wired, Wiring
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


Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
Pseudonym = Annotated[
    str,
    Path(pattern=r"^[0-9a-f]{64}$", description="The clinician's pseudonym (64 hex digits)"),
]


def _rules(wired: Wiring) -> dict[str, RuleInfo]:
    triage = wired.service.triage
    return rule_book(triage.knowledge, triage.modes)


@router.get("/report")
async def committee_report(wired: Wired, since: Since = None, until: Until = None) -> Report:
    """Per rule, service, indicator and week: evaluations, cards issued (and would-be cards of
    silent rules), accepted, overridden by reason, ignored; rates and time to feedback; the
    safety monitor's possible misses per rule; each clinician's cards per rule (by pseudonym)."""
    settings = wired.settings

    def run() -> Report:
        return report(
            wired.store.engine,
            since,
            until,
            _rules(wired),
            linked=settings.pseudonyms() is not None,
            window_days=settings.safety_window_days,
            min_cell=settings.clinician_min_cell,
        )

    return await anyio.to_thread.run_sync(run)


@router.get("/safety")
async def safety_review(
    wired: Wired, since: Since = None, until: Until = None, limit: Limit = 100, offset: Offset = 0
) -> list[SafetyCase]:
    """Possible misses on cards issued in the period, most recently found first (paged): the
    card that reassured, removed an order or referred routinely, and the red flag found within
    the window after it, with its evidence codes. No patient id."""

    def run() -> list[SafetyCase]:
        return safety_cases(wired.store.engine, since, until, limit, offset, _rules(wired))

    return await anyio.to_thread.run_sync(run)


@router.get("/clinicians/{pseudonym}")
async def clinician_feedback(
    wired: Wired, pseudonym: Pseudonym, since: Since = None, until: Until = None
) -> ClinicianReport:
    """One clinician's cards per rule (accepted, overridden, ignored; removed or kept orders)
    beside every clinician's together: a page to hand that clinician, naming no other."""

    def run() -> ClinicianReport:
        return clinician_report(
            wired.store.engine,
            since,
            until,
            pseudonym,
            _rules(wired),
            wired.settings.clinician_min_cell,
        )

    return await anyio.to_thread.run_sync(run)


@router.get("/feedback")
async def feedback_export(
    wired: Wired,
    since: Since = None,
    until: Until = None,
    limit: Limit = 100,
    offset: Offset = 0,
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
