"""The browser pages: the SMART referral-review page, the playground (static files) and, in
try-it mode, the interactive API docs."""

from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Header
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from cds_service.deps import Wired
from cds_service.errors import CDSError
from cds_service.headers import inline_script_hashes

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


def _examples(wired: Wired) -> dict[str, Path]:
    folder = wired.settings.examples_dir
    return {path.stem: path for path in sorted(folder.glob("*.json"))}


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
    return list(_examples(wired))


@playground_router.get("/examples/{name}")
async def example(name: str, wired: Wired) -> FileResponse:
    examples = _examples(wired)
    if name not in examples:
        raise CDSError.of(404, f"no example {name!r}")
    return FileResponse(examples[name], media_type="application/json")


_SWAGGER_UI = bytes(
    get_swagger_ui_html(openapi_url="/openapi.json", title="spine-cds - Swagger UI").body
)
_REDOC = bytes(get_redoc_html(openapi_url="/openapi.json", title="spine-cds - ReDoc").body)
_CDN = "https://cdn.jsdelivr.net"  # where FastAPI's pages load Swagger UI and ReDoc from
_ICON = "https://fastapi.tiangolo.com"

DOCS_SOURCES = {
    "/docs": {
        "script-src": f"'self' {_CDN} {inline_script_hashes(_SWAGGER_UI.decode())}",
        "style-src": f"'self' 'unsafe-inline' {_CDN}",
        "img-src": f"'self' data: {_ICON}",
    },
    "/redoc": {
        "script-src": f"'self' {_CDN}",
        "style-src": "'self' 'unsafe-inline' https://fonts.googleapis.com",
        "font-src": "https://fonts.gstatic.com",
        "img-src": f"'self' data: {_ICON}",
        "worker-src": "blob:",
    },
}
"""CSP sources the interactive docs need besides the base policy (`headers.SecurityHeaders`):
their scripts from the CDN, and Swagger UI's inline start-up script by its hash."""

docs_router = APIRouter(include_in_schema=False)
"""The interactive API docs (served only in try-it mode or with CDS_DEMO_PAGES)."""


@docs_router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return HTMLResponse(_SWAGGER_UI)


@docs_router.get("/redoc")
async def redoc() -> HTMLResponse:
    return HTMLResponse(_REDOC)
