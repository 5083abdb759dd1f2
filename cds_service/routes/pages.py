"""The browser pages: the SMART referral-review page, the playground (static files) and, in
try-it mode, the interactive API docs."""

from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Header
from fastapi.responses import FileResponse, JSONResponse

from cds_service import examples
from cds_service.deps import Wired
from cds_service.errors import CDSError
from cds_service.triage import today_utc

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/review")
async def review() -> FileResponse:
    """The SMART referral-review page that referral cards link to (static/review.js)."""
    return FileResponse(STATIC / "review.html")


@router.get("/review/config")
async def review_config(wired: Wired) -> JSONResponse:
    """What the review page needs for a SMART launch: its client id and the issuers it accepts."""
    settings = wired.settings
    config = {"clientId": settings.smart_client_id, "issuers": settings.review_issuers()}
    return JSONResponse(config)


@router.get("/review/card")
async def reviewed_card(
    wired: Wired,
    capability: Annotated[str, Header(alias="X-Card-Capability", max_length=200)],
) -> JSONResponse:
    """The card its SMART link's appContext opens: a capability sent in a header (never in a
    logged URL), valid for `review_ttl_hours` after the card was issued."""
    ttl_seconds = wired.settings.review_ttl_hours * 3600
    card = await anyio.to_thread.run_sync(wired.store.reviewed_card, capability, ttl_seconds)
    if card is None:
        raise CDSError.of(404, "no card for this link (unknown, or expired)")
    return JSONResponse(card, headers={"Cache-Control": "no-store"})


playground_router = APIRouter(prefix="/playground", include_in_schema=False)
"""Try-it pages (served only in try-it mode or with CDS_DEMO_PAGES)."""


@playground_router.get("")
async def playground() -> FileResponse:
    """A page to send requests and see the cards rendered (static, no build step)."""
    return FileResponse(STATIC / "playground.html")


@playground_router.get("/hooks")
async def hooks(wired: Wired) -> list[str]:
    """The hooks the service answers (the registry's ids), for the page's hook list."""
    return list(wired.service.triage.hooks)


@playground_router.get("/examples")
async def example_names(wired: Wired) -> list[str]:
    return list(examples.names(wired.settings.examples_dir))


@playground_router.get("/examples/{name}")
async def example(name: str, wired: Wired) -> JSONResponse:
    """The example request, its dates moved to the service's evaluation date (it never ages)."""
    path = examples.names(wired.settings.examples_dir).get(name)
    if path is None:
        raise CDSError.of(404, f"no example {name!r}")
    today = wired.settings.today or today_utc()
    return JSONResponse(await anyio.to_thread.run_sync(examples.load, path, today))


docs_router = APIRouter(include_in_schema=False)
"""The interactive API docs (try-it mode or CDS_DEMO_PAGES), from vendored Swagger UI."""


@docs_router.get("/docs")
async def docs() -> FileResponse:
    """Swagger UI over /openapi.json; its script and styles are the service's own files."""
    return FileResponse(STATIC / "docs.html")
