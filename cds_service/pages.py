"""The browser pages: the playground and the SMART referral-review page (static files)."""

from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from cds_service.errors import CDSError
from cds_service.storage import Store

STATIC = Path(__file__).parent / "static"


def add_pages(app: FastAPI, examples_dir: Path, store: Store) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
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

    @app.get("/review", include_in_schema=False)
    async def review() -> FileResponse:
        """The SMART referral-review page that referral cards link to."""
        return FileResponse(STATIC / "review.html")

    @app.get("/review/cards/{card_id}", include_in_schema=False)
    async def reviewed_card(card_id: str) -> dict[str, Any]:
        """An issued card, by the opaque appContext of its SMART link (an unguessable uuid)."""
        card = await anyio.to_thread.run_sync(store.card, card_id)
        if card is None:
            raise CDSError.of(404, "no such card")
        return card
