"""The floor for the HTTP benchmark: the same uvicorn stack, the same body read and parsed with
orjson, a fixed card answered. Nothing of spine-cds runs. `uvicorn bench.floor:app`."""

from typing import Any

import orjson

CARD = orjson.dumps(
    {
        "cards": [
            {"uuid": "floor", "summary": "floor", "indicator": "info", "source": {"label": "x"}}
        ]
    }
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    orjson.loads(body)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": CARD})
