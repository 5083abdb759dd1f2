"""Admission control: a bounded number of calls inside the app, a bounded queue before it."""

from collections.abc import MutableMapping
from typing import Any

import anyio

from cds_service.limits import Admission

CALL = {"type": "http", "method": "POST", "path": "/cds-services/patient-view", "headers": []}


def test_calls_past_the_slots_wait_and_past_the_queue_get_503() -> None:
    inside: list[int] = []
    release = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        inside.append(1)
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    admission = Admission(app, in_flight=1, queued=1, prefix="/cds-services/")
    statuses: list[int] = []

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await admission(dict(CALL), receive, send)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(3):  # one inside, one waiting, one turned away
                group.start_soon(call)
                await anyio.sleep(0.05)
            assert len(inside) == 1  # the waiting call has not entered the app
            assert statuses == [503]
            release.set()

    anyio.run(main)
    assert sorted(statuses) == [200, 200, 503]
    assert len(inside) == 2
