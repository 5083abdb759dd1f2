"""The browser pages: the playground and the SMART referral-review page (static files)."""

from pathlib import Path
from typing import Annotated

import anyio
from fastapi import FastAPI, Header
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from cds_service.errors import CDSError
from cds_service.storage import Store

STATIC = Path(__file__).parent / "static"


def add_pages(app: FastAPI, examples_dir: Path | None, store: Store, ttl_seconds: float) -> None:
    """The review page always; the playground only with `examples_dir` (try-it mode)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/review", include_in_schema=False)
    async def review() -> FileResponse:
        """The SMART referral-review page that referral cards link to."""
        return FileResponse(STATIC / "review.html")

    @app.get("/review/card", include_in_schema=False)
    async def reviewed_card(
        capability: Annotated[str, Header(alias="X-Card-Capability", max_length=200)],
    ) -> JSONResponse:
        """The card its SMART link's appContext opens: a capability sent in a header (never in a
        logged URL), valid for `review_ttl_hours` after the card was issued."""
        card = await anyio.to_thread.run_sync(store.reviewed_card, capability, ttl_seconds)
        if card is None:
            raise CDSError.of(404, "no card for this link (unknown, or expired)")
        return JSONResponse(card, headers={"Cache-Control": "no-store"})

    if examples_dir is not None:
        _add_playground(app, examples_dir)


def _add_playground(app: FastAPI, examples_dir: Path) -> None:
    examples = {path.stem: path for path in sorted(examples_dir.glob("*.json"))}

    @app.get("/playground", include_in_schema=False)
    async def playground() -> FileResponse:
        """A page to send requests and see the cards rendered (static, no build step)."""
        return FileResponse(STATIC / "playground.html")

    @app.get("/playground/examples", include_in_schema=False)
    async def example_names() -> list[str]:
        return list(examples)

    @app.get("/playground/examples/{name}", include_in_schema=False)
    async def example(name: str) -> FileResponse:
        if name not in examples:
            raise CDSError.of(404, f"no example {name!r}")
        return FileResponse(examples[name], media_type="application/json")
